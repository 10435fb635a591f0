/*
 * The physical floor of a bridge helper run, for the benchmark only: the
 * kernel's work and nothing else. No ACL, no checks, no privilege
 * handling, no error messages beyond an exit status. Never install it.
 *
 *   floor [--use-vnet] --fd=N --br=BRIDGE
 *
 * opens /dev/net/tun, creates tap%d (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR),
 * copies the bridge's MTU, sets a 0xfe MAC, adds the tap to the bridge,
 * raises it and sends the fd with one data byte, as QEMU's helper does,
 * with ioctls on one AF_UNIX socket (no IPv4 needed).
 *
 * Built static with musl by the benchmark: musl-gcc -static -O2. Only
 * libc headers: the few kernel numbers it needs are spelled out below.
 */
#include <fcntl.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define TUNSETIFF 0x400454ca
#define IFF_TAP_ 0x0002
#define IFF_NO_PI_ 0x1000
#define IFF_VNET_HDR_ 0x4000
#define SIOCBRADDIF_ 0x89a2

int main(int argc, char **argv)
{
	int fd = -1;
	const char *br = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--fd=", 5))
			fd = atoi(argv[i] + 5);
		else if (!strncmp(argv[i], "--br=", 5))
			br = argv[i] + 5;
	}
	if (fd < 0 || !br)
		return 2;

	int tun = open("/dev/net/tun", O_RDWR);
	if (tun < 0)
		return 5;
	struct ifreq tap = {0};
	strcpy(tap.ifr_name, "tap%d");
	tap.ifr_flags = IFF_TAP_ | IFF_NO_PI_ | IFF_VNET_HDR_;
	if (ioctl(tun, TUNSETIFF, &tap) < 0)
		return 8;

	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	struct ifreq r = {0};
	strncpy(r.ifr_name, br, IFNAMSIZ - 1);
	if (s < 0 || ioctl(s, SIOCGIFMTU, &r) < 0)
		return 7;
	int mtu = r.ifr_mtu;
	memset(&r, 0, sizeof r);
	strcpy(r.ifr_name, tap.ifr_name);
	r.ifr_mtu = mtu;
	if (ioctl(s, SIOCSIFMTU, &r) < 0 || ioctl(s, SIOCGIFHWADDR, &r) < 0)
		return 8;
	r.ifr_hwaddr.sa_data[0] = (char)0xfe;
	if (ioctl(s, SIOCSIFHWADDR, &r) < 0 || ioctl(s, SIOCGIFINDEX, &r) < 0)
		return 8;
	int index = r.ifr_ifindex;
	memset(&r, 0, sizeof r);
	strncpy(r.ifr_name, br, IFNAMSIZ - 1);
	r.ifr_ifindex = index;
	if (ioctl(s, SIOCBRADDIF_, &r) < 0)
		return 8;
	memset(&r, 0, sizeof r);
	strcpy(r.ifr_name, tap.ifr_name);
	if (ioctl(s, SIOCGIFFLAGS, &r) < 0)
		return 8;
	r.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &r) < 0)
		return 8;

	char byte = 0;
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c = {0};
	struct msghdr m = {0};
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = c.buf;
	m.msg_controllen = sizeof c.buf;
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &tun, sizeof(int));
	return sendmsg(fd, &m, 0) == 1 ? 0 : 6;
}
