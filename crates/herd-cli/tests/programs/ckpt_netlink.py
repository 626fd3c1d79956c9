# A netlink socket (NETLINK_ROUTE, in the IPv4 rule group, RTMGRP_IPV4_RULE,
# whose events are rare) held across a checkpoint.
#
#   ckpt_netlink.py N [unread]
#                       binds it, ticks N times (0.1 s each; the checkpoint lands
#                       there), then checks it: the same port id (the kernel gave
#                       it the process's pid), the same groups, and it still
#                       answers a dump of the network links with "lo" among them;
#                       with "unread", asks for that dump before it ticks and reads
#                       it after (answers waiting in it: refused)
#
# Restored without it (or another kind of socket at its fd), the last lines differ.
import os, socket, struct, sys, time

s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0x80))
port, groups = s.getsockname()
print("bound:", "port is the pid" if port == os.getpid() else "port is not the pid", "groups", hex(groups), flush=True)
# RTM_GETLINK (18), NLM_F_REQUEST | NLM_F_DUMP, then a struct ifinfomsg of zeroes.
dump = struct.pack("=LHHLL", 32, 18, 0x301, 1, 0) + bytes(16)
unread = sys.argv[2:] == ["unread"]
if unread:
    s.send(dump)
for i in range(int(sys.argv[1])):
    print("tick", i, flush=True)
    time.sleep(0.1)
port2, groups2 = s.getsockname()
print("same port:", port2 == port, "groups", hex(groups2), flush=True)
if not unread:
    s.send(dump)
names, done = [], False
while not done:
    data = s.recv(1 << 16)
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=LH", data, off)
        if kind == 3:  # NLMSG_DONE
            done = True
            break
        if kind == 16:  # RTM_NEWLINK: attributes after the ifinfomsg
            at = off + 32
            while at + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", data, at)
                if atype == 3:  # IFLA_IFNAME
                    names.append(data[at + 4:at + alen].rstrip(b"\0").decode())
                at += max(4, (alen + 3) & ~3)
        off += max(16, (length + 3) & ~3)
print("links include lo:", "lo" in names, flush=True)
