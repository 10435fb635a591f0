/*
 * The physical floor of a bridge helper run, for the benchmark only: the
 * kernel's work and nothing else. No ACL, no checks, no privilege
 * handling, no error messages beyond an exit status. Never install it.
 *
 *   floor [--use-vnet] [--queues=Q] --fd=N --br=BRIDGE
 *
 * opens /dev/net/tun, creates tap%d (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR),
 * copies the bridge's MTU, sets a 0xfe MAC, adds the tap to the bridge,
 * raises it and sends the fd with one data byte, as QEMU's helper does,
 * with ioctls on one AF_UNIX socket (no IPv4 needed).
 *
 * With Q > 1 (at most 253, what one SCM_RIGHTS message carries) the tap
 * is made with IFF_MULTI_QUEUE too, queues 2..Q are attached by opening
 * /dev/net/tun again and TUNSETIFF with the tap's name and flags, and all
 * Q fds go in one message with one data byte, as bridge-helper --queues
 * does: the kernel's price for a multiqueue tap. Q = 1 (the default)
 * makes exactly the system calls of a run without --queues.
 *
 * Built static with musl by the benchmark: musl-gcc -static -O2. Only
 * libc headers (musl-gcc sees no linux/ uapi headers): the few kernel
 * numbers it needs are spelled out below.
 */
#include <fcntl.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define TUNSETIFF 0x400454ca
#define IFF_TAP_ 0x0002
#define IFF_MULTI_QUEUE_ 0x0100
#define IFF_NO_PI_ 0x1000
#define IFF_VNET_HDR_ 0x4000
#define SIOCBRADDIF_ 0x89a2
#define MAX_QUEUES 253

int main(int argc, char **argv)
{
	int fd = -1, queues = 1;
	const char *br = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--fd=", 5))
			fd = atoi(argv[i] + 5);
		else if (!strncmp(argv[i], "--br=", 5))
			br = argv[i] + 5;
		else if (!strncmp(argv[i], "--queues=", 9))
			queues = atoi(argv[i] + 9);
	}
	if (fd < 0 || !br || queues < 1 || queues > MAX_QUEUES)
		return 2;

	int tun[MAX_QUEUES];
	tun[0] = open("/dev/net/tun", O_RDWR);
	if (tun[0] < 0)
		return 5;
	struct ifreq tap = {0};
	strcpy(tap.ifr_name, "tap%d");
	tap.ifr_flags = IFF_TAP_ | IFF_NO_PI_ | IFF_VNET_HDR_;
	if (queues > 1)
		tap.ifr_flags |= IFF_MULTI_QUEUE_;
	if (ioctl(tun[0], TUNSETIFF, &tap) < 0)
		return 8;
	/* TUNSETIFF wrote the tap's name into `tap`: the next ones attach. */
	for (int q = 1; q < queues; q++) {
		tun[q] = open("/dev/net/tun", O_RDWR);
		if (tun[q] < 0)
			return 5;
		if (ioctl(tun[q], TUNSETIFF, &tap) < 0)
			return 8;
	}

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
		char buf[CMSG_SPACE(sizeof tun)];
	} c = {0};
	size_t size = queues * sizeof(int);
	struct msghdr m = {0};
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = c.buf;
	m.msg_controllen = CMSG_SPACE(size);
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(size);
	memcpy(CMSG_DATA(h), tun, size);
	/*
	 * Not musl's sendmsg(): older musl (Debian's 1.2.3 here) refuses more
	 * than 1024 bytes of control data, 252 fds. The same system call
	 * either way; the zeroed structs keep musl's padding fields zero.
	 */
	return syscall(SYS_sendmsg, fd, &m, 0) == 1 ? 0 : 6;
}
