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
 * The forwarded floor (issue 26's architecture with no checks at all):
 *
 *   floor --serve=fork|spares --listen=L [--spares=S]
 *   floor --forward=PATH [--use-vnet] --fd=N --br=BRIDGE
 *
 * --serve accepts on the listening Unix stream socket L (bound by the
 * benchmark and handed over, as systemd's socket activation does). A
 * session reads the request (the bridge's name, one read), does the tap
 * work above with one queue and sends the fd over the connection with one
 * byte, then exits. With `fork` the server accepts, forks the session
 * and reaps; with `spares` S sessions (default 4) are forked ahead and
 * each accepts by itself, and the server forks a new spare whenever one
 * exits: no fork on a request's path. --forward is the unprivileged
 * client QEMU would exec: it connects to PATH, sends the bridge's name,
 * receives the fd and passes it on to --fd with one byte.
 *
 * Built static with musl by the benchmark: musl-gcc -static -O2. Only
 * libc headers (musl-gcc sees no linux/ uapi headers): the few kernel
 * numbers it needs are spelled out below.
 */
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define TUNSETIFF 0x400454ca
#define IFF_TAP_ 0x0002
#define IFF_MULTI_QUEUE_ 0x0100
#define IFF_NO_PI_ 0x1000
#define IFF_VNET_HDR_ 0x4000
#define SIOCBRADDIF_ 0x89a2
#define MAX_QUEUES 253

/*
 * The kernel's work of a run: the tap on `br` with `queues` queues, its
 * fds in tun[0..queues). 0, or the exit status of the failed step.
 */
static int tap_work(const char *br, int queues, int *tun)
{
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
	return 0;
}

/* `n` fds on `sock` with one data byte: 0, or 6. */
static int send_fds(int sock, const int *fds, int n)
{
	char byte = 0;
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(MAX_QUEUES * sizeof(int))];
	} c = {0};
	size_t size = n * sizeof(int);
	struct msghdr m = {0};
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = c.buf;
	m.msg_controllen = CMSG_SPACE(size);
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(size);
	memcpy(CMSG_DATA(h), fds, size);
	/*
	 * Not musl's sendmsg(): older musl (Debian's 1.2.3 here) refuses more
	 * than 1024 bytes of control data, 252 fds. The same system call
	 * either way; the zeroed structs keep musl's padding fields zero.
	 */
	return syscall(SYS_sendmsg, sock, &m, 0) == 1 ? 0 : 6;
}

/* One session: the request (a bridge's name) on `conn`, the tap back. */
static int session(int conn)
{
	char br[IFNAMSIZ] = {0};
	if (read(conn, br, IFNAMSIZ - 1) < 1)
		return 3;
	int tun;
	int status = tap_work(br, 1, &tun);
	return status ? status : send_fds(conn, &tun, 1);
}

/* A spare: dies with the server, accepts one connection, serves it. */
static void spare(int listener)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	int conn = accept(listener, NULL, NULL);
	_exit(conn < 0 ? 4 : session(conn));
}

static int serve(int listener, int fork_per_request, int spares)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* dies with the benchmark */
	if (fork_per_request) {
		for (;;) {
			int conn = accept(listener, NULL, NULL);
			if (conn < 0)
				continue;
			if (fork() == 0)
				_exit(session(conn));
			close(conn);
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
		}
	}
	for (int i = 0; i < spares; i++)
		if (fork() == 0)
			spare(listener);
	for (;;)
		if (wait(NULL) > 0 && fork() == 0)
			spare(listener);
}

static int forward(const char *path, const char *br, int fd)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof a.sun_path)
		return 2;
	strcpy(a.sun_path, path);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0)
		return 9;
	size_t len = strlen(br);
	if (write(s, br, len) != (ssize_t)len)
		return 9;
	char byte;
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
	if (recvmsg(s, &m, 0) != 1 || !h || h->cmsg_type != SCM_RIGHTS)
		return 10;
	int tun;
	memcpy(&tun, CMSG_DATA(h), sizeof tun);
	return send_fds(fd, &tun, 1);
}

int main(int argc, char **argv)
{
	int fd = -1, queues = 1, listener = -1, spares = 4;
	const char *br = NULL, *serve_as = NULL, *forward_to = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--fd=", 5))
			fd = atoi(argv[i] + 5);
		else if (!strncmp(argv[i], "--br=", 5))
			br = argv[i] + 5;
		else if (!strncmp(argv[i], "--queues=", 9))
			queues = atoi(argv[i] + 9);
		else if (!strncmp(argv[i], "--serve=", 8))
			serve_as = argv[i] + 8;
		else if (!strncmp(argv[i], "--listen=", 9))
			listener = atoi(argv[i] + 9);
		else if (!strncmp(argv[i], "--spares=", 9))
			spares = atoi(argv[i] + 9);
		else if (!strncmp(argv[i], "--forward=", 10))
			forward_to = argv[i] + 10;
	}
	if (serve_as) {
		int per_request = !strcmp(serve_as, "fork");
		if (listener < 0 || spares < 1 ||
		    (!per_request && strcmp(serve_as, "spares")))
			return 2;
		return serve(listener, per_request, spares);
	}
	if (fd < 0 || !br || queues < 1 || queues > MAX_QUEUES)
		return 2;
	if (forward_to)
		return queues == 1 ? forward(forward_to, br, fd) : 2;

	int tun[MAX_QUEUES];
	int status = tap_work(br, queues, tun);
	return status ? status : send_fds(fd, tun, queues);
}
