/*
 * The physical floor of a bridge helper run, for the benchmark only: the
 * kernel's work and nothing else. No ACL, no checks, no privilege
 * handling, no error messages beyond an exit status. Never install it.
 *
 *   floor [--use-vnet] [--queues=Q] --fd=N --br=BRIDGE
 *   floor --features [--no-port-options] [--use-vnet] --fd=N --br=BRIDGE
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
 * --features: the kernel requests of a bridge-helper run (as root, one
 * queue, `port BRIDGE isolated` in bridge-helper.conf), in its order,
 * with none of its checks: what `strace -f` shows of such a run, less
 * what is listed as left out below. What it does, in order:
 *   - getuid() once: the uid that names the slot altname, the alias and
 *     the owner (bridge-helper has it from its getresuid);
 *   - the trust walk as file-system work: openat "/" (O_PATH), fstat,
 *     fstatfs; openat "etc", fstat; openat "qemu", fstat, fstatfs; close
 *     etc; bridge.conf and bridge-helper.conf each openat, fstat, read
 *     to the end, close (a missing bridge-helper.conf is fine); close;
 *   - a NETLINK_ROUTE socket with NETLINK_CAP_ACK and NETLINK_EXT_ACK;
 *   - RTM_GETLINK of the bridge by IFLA_IFNAME (+ IFLA_EXT_MASK skip
 *     stats): its index and MTU;
 *   - the slot scan: one sendmsg carrying 4 RTM_GETLINK by
 *     IFLA_ALT_IFNAME "bridge-helper.UID.0".."3", and the 4 answers;
 *   - capget, capset with nothing effective, the name search, capset
 *     back: bridge-helper lowers CAP_NET_ADMIN for the search because a
 *     miss with it effective makes the kernel run modprobe netdev-NAME;
 *   - the name search: SIOCGIFINDEX of tap0, tap1, tap3, tap7, ... until
 *     one is free, then bisecting, as src/taps/naming.rs does (one lookup
 *     on an empty bridge);
 *   - open /dev/net/tun, TUNGETFEATURES, TUNSETIFF with that name and
 *     IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_TUN_EXCL (tap%d if it is taken
 *     by then, as ours falls back);
 *   - SIOCGIFHWADDR and SIOCSIFHWADDR (0xfe) on the tun fd;
 *   - RTM_GETLINK of the tap by IFLA_IFNAME: its index;
 *   - RTM_NEWLINKPROP: the altname of the lowest free slot;
 *   - TUNSETOWNER(uid);
 *   - RTM_SETLINK with IFLA_MTU, IFLA_IFALIAS "bridge-helper uid=UID"
 *     and IFLA_MASTER, the tap left down; the AF_BRIDGE RTM_SETLINK with
 *     IFLA_PROTINFO { IFLA_BRPORT_ISOLATED 1 }; RTM_SETLINK up. With
 *     --no-port-options (a run without port settings): one RTM_SETLINK
 *     with the three attributes and IFF_UP instead;
 *   - TUNGETIFF, and the read-back RTM_GETLINK of the tap by index;
 *   - the audit line: getppid, read /proc/PPID/comm, read /etc/passwd
 *     (one 8 KiB read), getpid, an AF_UNIX SOCK_DGRAM socket, one
 *     sendto /dev/log with MSG_DONTWAIT (errors ignored), close;
 *   - sendmsg of the fd (MSG_DONTWAIT|MSG_NOSIGNAL), close the tun and
 *     netlink fds.
 * Every netlink request waits for its answer or ack; any error but the
 * slot scan's ENODEV ends the run with a non-zero status.
 * What it leaves out: everything in user space (argument, ACL and
 * settings parsing, the answers' checks, the audit line's escaping, the
 * allocator's arena mmap), the privilege handling (getresuid/getresgid,
 * capget/capset but the pair around the search, PR_CAPBSET_DROP,
 * keepcaps, setres[ug]id, ambient, no_new_privs, the rlimit reads, the
 * signal set-up and the early poll of fds 0-2), the checks on the --fd
 * socket (fcntl, fstat, getsockname, getsockopt, getpeername, poll), and
 * what a run does only when it finds something: taken slots past the
 * first four, abandoned taps to reap, a renamed tap.
 *
 * Built static with musl by the benchmark: musl-gcc -static -O2. Only
 * libc headers (musl-gcc sees no linux/ uapi headers): the few kernel
 * numbers it needs are spelled out below.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define TUNSETIFF 0x400454ca
#define IFF_TAP_ 0x0002
#define IFF_MULTI_QUEUE_ 0x0100
#define IFF_NO_PI_ 0x1000
#define IFF_VNET_HDR_ 0x4000
#define SIOCBRADDIF_ 0x89a2
#define MAX_QUEUES 253

/* Out of line: the default mode's code stays as compact as it was. */
static int features(int fd, const char *br, int use_vnet, int port)
	__attribute__((noinline));

int main(int argc, char **argv)
{
	int fd = -1, queues = 1, with_features = 0, port = 1, use_vnet = 0;
	const char *br = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--fd=", 5))
			fd = atoi(argv[i] + 5);
		else if (!strncmp(argv[i], "--br=", 5))
			br = argv[i] + 5;
		else if (!strncmp(argv[i], "--queues=", 9))
			queues = atoi(argv[i] + 9);
		else if (!strcmp(argv[i], "--features"))
			with_features = 1;
		else if (!strcmp(argv[i], "--no-port-options"))
			port = 0;
		else if (!strcmp(argv[i], "--use-vnet"))
			use_vnet = 1;
	}
	if (fd < 0 || !br || queues < 1 || queues > MAX_QUEUES)
		return 2;
	if (with_features)
		return queues == 1 && strlen(br) < IFNAMSIZ
			       ? features(fd, br, use_vnet, port)
			       : 2;

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

/* ------------------------------------------------------------------ */
/* --features: the kernel requests of a bridge-helper run.            */

/* linux/if_tun.h, linux/sockios.h */
#define TUNGETFEATURES_ 0x800454cf
#define TUNSETOWNER_ 0x400454cc
#define TUNGETIFF_ 0x800454d2
#define IFF_TUN_EXCL_ 0x8000
/* linux/netlink.h, linux/rtnetlink.h, linux/if_link.h */
#define NETLINK_ROUTE_ 0
#define NETLINK_CAP_ACK_ 10
#define NETLINK_EXT_ACK_ 11
#define NLMSG_ERROR_ 2
#define NLMSG_DONE_ 3
#define NLM_F_REQUEST_ 0x1
#define NLM_F_MULTI_ 0x2
#define NLM_F_ACK_ 0x4
#define NLA_F_NESTED_ 0x8000
#define RTM_NEWLINK_ 16
#define RTM_GETLINK_ 18
#define RTM_SETLINK_ 19
#define RTM_NEWLINKPROP_ 108
#define IFLA_IFNAME_ 3
#define IFLA_MTU_ 4
#define IFLA_MASTER_ 10
#define IFLA_PROTINFO_ 12
#define IFLA_IFALIAS_ 20
#define IFLA_EXT_MASK_ 29
#define IFLA_PROP_LIST_ 52
#define IFLA_ALT_IFNAME_ 53
#define IFLA_BRPORT_ISOLATED_ 33
#define RTEXT_FILTER_SKIP_STATS_ 8
#define AF_BRIDGE_ 7
/* linux/capability.h */
#define CAP_VERSION_3 0x20080522
/* src/taps/slots.rs (BATCH) and src/taps/naming.rs (MAX_NUMBER) */
#define SLOTS 4
#define MAX_NUMBER 32767

struct nl_hdr {
	uint32_t len;
	uint16_t type, flags;
	uint32_t seq, pid;
};
struct nl_ifinfo {
	unsigned char family, pad;
	uint16_t type;
	int32_t index;
	uint32_t flags, change;
};
struct nl_attr {
	uint16_t len, type;
};
struct nl_addr {
	sa_family_t family;
	unsigned short pad;
	uint32_t pid, groups;
};
struct cap_hdr {
	uint32_t version;
	int pid;
};
struct cap_data {
	uint32_t effective, permitted, inheritable;
};

#define ALIGN4(n) (((n) + 3u) & ~3u)

/*
 * Appends to a string; no stdio, which would double the size of the
 * default floor's image for a few names.
 */
static char *cat(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	*p = 0;
	return p;
}

static char *cat_u(char *p, unsigned long v)
{
	char digits[24];
	int n = 0;
	do
		digits[n++] = (char)('0' + v % 10);
	while (v /= 10);
	while (n)
		*p++ = digits[--n];
	*p = 0;
	return p;
}

/* A request: header and ifinfomsg, then attributes. */
struct msg {
	size_t len;
	unsigned char b[256];
};

static void msg_new(struct msg *m, uint16_t type, uint16_t flags,
		    unsigned char family, int32_t index, uint32_t ifi_flags,
		    uint32_t change)
{
	memset(m, 0, sizeof *m);
	struct nl_hdr h = {0};
	h.type = type;
	h.flags = flags;
	struct nl_ifinfo i = {0};
	i.family = family;
	i.index = index;
	i.flags = ifi_flags;
	i.change = change;
	memcpy(m->b, &h, sizeof h);
	memcpy(m->b + sizeof h, &i, sizeof i);
	m->len = sizeof h + sizeof i;
}

static size_t msg_attr(struct msg *m, uint16_t type, const void *v, size_t n)
{
	size_t at = m->len;
	struct nl_attr a = {(uint16_t)(sizeof a + n), type};
	memcpy(m->b + at, &a, sizeof a);
	if (n)
		memcpy(m->b + at + sizeof a, v, n);
	m->len = ALIGN4(at + sizeof a + n);
	return at;
}

static void msg_end_nest(struct msg *m, size_t at)
{
	uint16_t len = (uint16_t)(m->len - at);
	memcpy(m->b + at, &len, sizeof len);
}

static void msg_finish(struct msg *m, uint32_t seq)
{
	uint32_t len = (uint32_t)m->len;
	memcpy(m->b, &len, sizeof len);
	memcpy(m->b + offsetof(struct nl_hdr, seq), &seq, sizeof seq);
}

static unsigned char answer[64 * 1024];

static int nl_send(int nl, const void *bytes, size_t len)
{
	struct nl_addr kernel = {AF_NETLINK, 0, 0, 0};
	struct iovec iov = {(void *)bytes, len};
	struct msghdr mh = {0};
	mh.msg_name = &kernel;
	mh.msg_namelen = sizeof kernel;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	return sendmsg(nl, &mh, 0) == (ssize_t)len ? 0 : -1;
}

static ssize_t nl_recv(int nl)
{
	struct nl_addr from;
	struct iovec iov = {answer, sizeof answer};
	struct msghdr mh = {0};
	mh.msg_name = &from;
	mh.msg_namelen = sizeof from;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	return recvmsg(nl, &mh, 0);
}

/*
 * Sends one request and waits for its answer: 0 with `*reply` the answer's
 * payload (an RTM_NEWLINK) or NULL (an ack), or a negative errno.
 */
static int nl_exchange(int nl, struct msg *m, uint32_t seq,
		       const unsigned char **reply, size_t *reply_len)
{
	msg_finish(m, seq);
	if (nl_send(nl, m->b, m->len) < 0)
		return -EIO;
	if (reply)
		*reply = NULL;
	for (;;) {
		ssize_t got = nl_recv(nl);
		if (got < 0)
			return -EIO;
		size_t at = 0;
		while (at + sizeof(struct nl_hdr) <= (size_t)got) {
			struct nl_hdr h;
			memcpy(&h, answer + at, sizeof h);
			if (h.len < sizeof h || at + h.len > (size_t)got)
				return -EPROTO;
			const unsigned char *payload = answer + at + sizeof h;
			at += ALIGN4(h.len);
			if (h.seq != seq)
				continue;
			if (h.type == NLMSG_ERROR_) {
				int32_t code;
				memcpy(&code, payload, sizeof code);
				return code;
			}
			if (h.type == NLMSG_DONE_)
				return 0;
			if (reply) {
				*reply = payload;
				*reply_len = h.len - sizeof h;
			}
			if (!(h.flags & NLM_F_MULTI_))
				return 0;
		}
	}
}

/* An RTM_NEWLINK payload's index, and its MTU if `mtu` is not NULL. */
static int32_t link_of(const unsigned char *p, size_t len, uint32_t *mtu)
{
	struct nl_ifinfo i;
	if (!p || len < sizeof i)
		return -1;
	memcpy(&i, p, sizeof i);
	for (size_t at = sizeof i; mtu && at + sizeof(struct nl_attr) <= len;) {
		struct nl_attr a;
		memcpy(&a, p + at, sizeof a);
		if (a.len < sizeof a || at + a.len > len)
			break;
		if ((a.type & 0x3fff) == IFLA_MTU_ && a.len >= sizeof a + 4)
			memcpy(mtu, p + at + sizeof a, 4);
		at += ALIGN4(a.len);
	}
	return i.index;
}

/* RTM_GETLINK by name (index < 0) or by index, as ours asks. */
static int32_t get_link(int nl, uint32_t seq, const char *name, int32_t index,
			uint32_t *mtu)
{
	struct msg m;
	uint32_t mask = RTEXT_FILTER_SKIP_STATS_;
	msg_new(&m, RTM_GETLINK_, NLM_F_REQUEST_, 0, index < 0 ? 0 : index, 0,
		0);
	if (index < 0)
		msg_attr(&m, IFLA_IFNAME_, name, strlen(name));
	msg_attr(&m, IFLA_EXT_MASK_, &mask, sizeof mask);
	const unsigned char *reply;
	size_t len = 0;
	if (nl_exchange(nl, &m, seq, &reply, &len) != 0)
		return -1;
	return link_of(reply, len, mtu);
}

/* Opens, stats, reads to the end and closes a file of the trust walk. */
static int read_conf(int dir, const char *name)
{
	char buf[4096];
	struct stat st;
	int f = openat(dir, name,
		       O_RDONLY | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	if (f < 0)
		return -1;
	fstat(f, &st);
	while (read(f, buf, sizeof buf) > 0)
		;
	close(f);
	return 0;
}

static int tap_in_use(int sock, unsigned n)
{
	struct ifreq r = {0};
	cat_u(cat(r.ifr_name, "tap"), n);
	if (ioctl(sock, SIOCGIFINDEX, &r) == 0)
		return 1;
	return errno == ENODEV ? 0 : -1;
}

/* src/taps/naming.rs: gallop over 0, 1, 3, 7, ..., then bisect. */
static int free_tap_number(int sock)
{
	int taken = -1, vacant = 0, used;
	while ((used = tap_in_use(sock, vacant)) == 1) {
		if (vacant == MAX_NUMBER)
			return -1;
		taken = vacant;
		vacant = vacant * 2 + 1;
	}
	if (used < 0)
		return -1;
	while (taken >= 0 && vacant - taken > 1) {
		int mid = taken + (vacant - taken) / 2;
		used = tap_in_use(sock, mid);
		if (used < 0)
			return -1;
		if (used)
			taken = mid;
		else
			vacant = mid;
	}
	return vacant;
}

static int features(int fd, const char *br, int use_vnet, int port)
{
	uid_t uid = getuid();
	uint32_t seq = 0;

	/* The trust walk, as file-system work. */
	struct stat st;
	struct statfs fs;
	int root = openat(AT_FDCWD, "/",
			  O_RDONLY | O_CLOEXEC | O_PATH | O_DIRECTORY);
	if (root < 0 || fstat(root, &st) < 0 || fstatfs(root, &fs) < 0)
		return 3;
	int dir_flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_PATH | O_DIRECTORY;
	int etc = openat(root, "etc", dir_flags);
	if (etc < 0 || fstat(etc, &st) < 0)
		return 3;
	int qemu = openat(etc, "qemu", dir_flags);
	if (qemu < 0 || fstat(qemu, &st) < 0 || fstatfs(qemu, &fs) < 0)
		return 3;
	close(etc);
	if (read_conf(qemu, "bridge.conf") < 0)
		return 3;
	read_conf(qemu, "bridge-helper.conf");
	close(root);
	close(qemu);

	int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE_);
	int on = 1;
	if (nl < 0 ||
	    setsockopt(nl, SOL_NETLINK, NETLINK_CAP_ACK_, &on, sizeof on) < 0 ||
	    setsockopt(nl, SOL_NETLINK, NETLINK_EXT_ACK_, &on, sizeof on) < 0)
		return 8;

	uint32_t mtu = 0;
	int32_t bridge = get_link(nl, ++seq, br, -1, &mtu);
	if (bridge <= 0 || mtu == 0)
		return 7;

	/* The slot scan: four lookups by altname in one datagram. */
	unsigned char batch[SLOTS * sizeof(((struct msg *)0)->b)];
	size_t batch_len = 0;
	uint32_t first = seq + 1;
	char slot_name[SLOTS][64];
	for (int k = 0; k < SLOTS; k++) {
		struct msg m;
		uint32_t mask = RTEXT_FILTER_SKIP_STATS_;
		char *p = cat_u(cat(slot_name[k], "bridge-helper."), uid);
		cat_u(cat(p, "."), (unsigned long)k);
		msg_new(&m, RTM_GETLINK_, NLM_F_REQUEST_, 0, 0, 0, 0);
		msg_attr(&m, IFLA_ALT_IFNAME_, slot_name[k],
			 strlen(slot_name[k]));
		msg_attr(&m, IFLA_EXT_MASK_, &mask, sizeof mask);
		msg_finish(&m, ++seq);
		memcpy(batch + batch_len, m.b, m.len);
		batch_len += m.len;
	}
	if (nl_send(nl, batch, batch_len) < 0)
		return 8;
	int answered = 0, slot = -1, taken[SLOTS] = {0};
	while (answered < SLOTS) {
		ssize_t got = nl_recv(nl);
		if (got < 0)
			return 8;
		size_t at = 0;
		while (at + sizeof(struct nl_hdr) <= (size_t)got) {
			struct nl_hdr h;
			memcpy(&h, answer + at, sizeof h);
			if (h.len < sizeof h || at + h.len > (size_t)got)
				return 8;
			const unsigned char *payload = answer + at + sizeof h;
			at += ALIGN4(h.len);
			uint32_t k = h.seq - first;
			if (k >= SLOTS)
				continue;
			if (h.type == NLMSG_ERROR_) {
				int32_t code;
				memcpy(&code, payload, sizeof code);
				if (code != -ENODEV)
					return 8;
			} else if (h.type == RTM_NEWLINK_) {
				taken[k] = 1;
			} else {
				return 8;
			}
			answered++;
		}
	}
	for (int k = SLOTS - 1; k >= 0; k--)
		if (!taken[k])
			slot = k;
	if (slot < 0)
		return 8;

	/* The name search, with nothing effective: no modprobe on a miss. */
	struct cap_hdr ch = {CAP_VERSION_3, 0};
	struct cap_data saved[2], none[2];
	if (syscall(SYS_capget, &ch, saved) < 0)
		return 5;
	memcpy(none, saved, sizeof none);
	none[0].effective = none[1].effective = 0;
	if (syscall(SYS_capset, &ch, none) < 0)
		return 5;
	int number = free_tap_number(nl);
	if (syscall(SYS_capset, &ch, saved) < 0)
		return 5;

	int tun = openat(AT_FDCWD, "/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (tun < 0)
		return 5;
	unsigned int tun_features = 0;
	if (ioctl(tun, TUNGETFEATURES_, &tun_features) < 0)
		return 8;
	short flags = IFF_TAP_ | IFF_NO_PI_;
	if (use_vnet && (tun_features & IFF_VNET_HDR_))
		flags |= IFF_VNET_HDR_;
	struct ifreq tap = {0};
	if (number >= 0)
		cat_u(cat(tap.ifr_name, "tap"), (unsigned long)number);
	else
		strcpy(tap.ifr_name, "tap%d");
	tap.ifr_flags = flags | (short)IFF_TUN_EXCL_;
	if (ioctl(tun, TUNSETIFF, &tap) < 0) {
		if (errno != EBUSY)
			return 8;
		memset(&tap, 0, sizeof tap);
		strcpy(tap.ifr_name, "tap%d");
		tap.ifr_flags = flags | (short)IFF_TUN_EXCL_;
		if (ioctl(tun, TUNSETIFF, &tap) < 0)
			return 8;
	}
	char name[IFNAMSIZ];
	memcpy(name, tap.ifr_name, IFNAMSIZ);
	name[IFNAMSIZ - 1] = 0;

	struct ifreq r = {0};
	if (ioctl(tun, SIOCGIFHWADDR, &r) < 0)
		return 8;
	r.ifr_hwaddr.sa_data[0] = (char)0xfe;
	if (ioctl(tun, SIOCSIFHWADDR, &r) < 0)
		return 8;

	int32_t index = get_link(nl, ++seq, name, -1, NULL);
	if (index <= 0)
		return 8;

	struct msg m;
	msg_new(&m, RTM_NEWLINKPROP_, NLM_F_REQUEST_ | NLM_F_ACK_, 0, index, 0,
		0);
	size_t list = msg_attr(&m, IFLA_PROP_LIST_ | NLA_F_NESTED_, NULL, 0);
	msg_attr(&m, IFLA_ALT_IFNAME_, slot_name[slot], strlen(slot_name[slot]));
	msg_end_nest(&m, list);
	if (nl_exchange(nl, &m, ++seq, NULL, NULL) != 0)
		return 8;

	if (ioctl(tun, TUNSETOWNER_, (unsigned long)uid) < 0)
		return 8;

	char alias[64];
	size_t alias_len = (size_t)(cat_u(cat(alias, "bridge-helper uid="), uid) -
				    alias);
	uint32_t up = port ? 0 : IFF_UP;
	msg_new(&m, RTM_SETLINK_, NLM_F_REQUEST_ | NLM_F_ACK_, 0, index, up, up);
	msg_attr(&m, IFLA_MTU_, &mtu, sizeof mtu);
	msg_attr(&m, IFLA_IFALIAS_, alias, alias_len);
	msg_attr(&m, IFLA_MASTER_, &bridge, sizeof bridge);
	if (nl_exchange(nl, &m, ++seq, NULL, NULL) != 0)
		return 8;
	if (port) {
		unsigned char isolated = 1;
		msg_new(&m, RTM_SETLINK_, NLM_F_REQUEST_ | NLM_F_ACK_,
			AF_BRIDGE_, index, 0, 0);
		size_t info =
			msg_attr(&m, IFLA_PROTINFO_ | NLA_F_NESTED_, NULL, 0);
		msg_attr(&m, IFLA_BRPORT_ISOLATED_, &isolated, 1);
		msg_end_nest(&m, info);
		if (nl_exchange(nl, &m, ++seq, NULL, NULL) != 0)
			return 8;
		msg_new(&m, RTM_SETLINK_, NLM_F_REQUEST_ | NLM_F_ACK_, 0, index,
			IFF_UP, IFF_UP);
		if (nl_exchange(nl, &m, ++seq, NULL, NULL) != 0)
			return 8;
	}

	memset(&r, 0, sizeof r);
	if (ioctl(tun, TUNGETIFF_, &r) < 0)
		return 8;
	if (get_link(nl, ++seq, NULL, index, NULL) != index)
		return 8;

	/* The audit line's work; its failures never matter. */
	char path[64], comm[64] = "", passwd[8192];
	int ppid = (int)getppid();
	cat(cat_u(cat(path, "/proc/"), (unsigned long)ppid), "/comm");
	int f = openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	if (f >= 0) {
		ssize_t n = read(f, comm, sizeof comm - 1);
		comm[n > 0 ? n - 1 : 0] = 0;
		close(f);
	}
	f = openat(AT_FDCWD, "/etc/passwd", O_RDONLY | O_CLOEXEC);
	if (f >= 0) {
		ssize_t n = read(f, passwd, sizeof passwd);
		(void)n;
		close(f);
	}
	char line[256], *e = cat(line, "<86>bridge-helper[");
	e = cat(cat_u(e, (unsigned long)getpid()), "]: uid=");
	e = cat(cat_u(e, uid), " user=? ppid=");
	e = cat(cat(cat_u(e, (unsigned long)ppid), " comm="), comm);
	e = cat(cat(cat(cat(e, " bridge="), br), " tap="), name);
	e = cat(e, " granted by /etc/qemu/bridge.conf:1");
	size_t line_len = (size_t)(e - line);
	int log = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (log >= 0) {
		struct sockaddr_un dev_log = {0};
		dev_log.sun_family = AF_UNIX;
		memcpy(dev_log.sun_path, "/dev/log", 8);
		sendto(log, line, line_len, MSG_DONTWAIT,
		       (struct sockaddr *)&dev_log,
		       offsetof(struct sockaddr_un, sun_path) + 8);
		close(log);
	}

	char byte = 0;
	struct iovec iov = {&byte, 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} c = {0};
	struct msghdr mh = {0};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = c.buf;
	mh.msg_controllen = sizeof c.buf;
	struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &tun, sizeof tun);
	if (sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != 1)
		return 6;
	close(tun);
	close(nl);
	return 0;
}
