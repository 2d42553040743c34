"""Hand-encoded RTM_GETROUTE requests and decoding of recorded answers."""

import ipaddress
import struct

from leakcheck import rtnl


def test_encode_request_with_selectors():
    query = rtnl.Query(dst=ipaddress.ip_address("198.51.100.1"), uid=1000, mark=0xCA6C, ipproto=17, dport=53)
    raw = rtnl.encode(query, seq=7)
    length, mtype, flags, seq, _ = rtnl.NLMSGHDR.unpack_from(raw)
    assert (length, mtype, flags, seq) == (len(raw), rtnl.RTM_GETROUTE, rtnl.NLM_F_REQUEST, 7)
    family, dst_len, *_rest, rflags = rtnl.RTMSG.unpack_from(raw, 16)
    assert family == 2 and dst_len == 32 and rflags == rtnl.RTM_F_FIB_MATCH | rtnl.RTM_F_LOOKUP_TABLE
    attrs = dict(rtnl._iter_attrs(raw, 16 + rtnl.RTMSG.size, len(raw)))
    assert attrs[rtnl.RTA_DST] == bytes([198, 51, 100, 1])
    assert struct.unpack("=I", attrs[rtnl.RTA_UID])[0] == 1000
    assert struct.unpack("=I", attrs[rtnl.RTA_MARK])[0] == 0xCA6C
    assert attrs[rtnl.RTA_DPORT] == b"\x00\x35"


def _answer_bytes():
    """A recorded RTM_NEWROUTE answer: 198.51.100.0/24 via 100.64.0.1 dev 2 table main proto dhcp."""
    attrs = (rtnl._attr(rtnl.RTA_TABLE, struct.pack("=I", 254))
             + rtnl._attr(rtnl.RTA_DST, bytes([198, 51, 100, 0]))
             + rtnl._attr(rtnl.RTA_GATEWAY, bytes([100, 64, 0, 1]))
             + rtnl._attr(rtnl.RTA_OIF, struct.pack("=I", 2)))
    body = rtnl.RTMSG.pack(2, 24, 0, 0, 254, 16, 0, 1, 0) + attrs
    return rtnl.NLMSGHDR.pack(16 + len(body), rtnl.RTM_NEWROUTE, 0, 3, 0) + body


def test_decode_answer_and_errors():
    results = {}
    error = rtnl.NLMSGHDR.pack(36, rtnl.NLMSG_ERROR, 0, 4, 0) + struct.pack("=i", -101) + b"\0" * 16
    rtnl.RouteLookup._parse(_answer_bytes() + error, 3, 2, results)
    answer = results[3]
    assert (answer.prefix, answer.table, answer.oif, answer.gateway, answer.protocol) == (
        "198.51.100.0/24", 254, 2, "100.64.0.1", 16)
    assert results[4].error == 101 and results[4].error_name == "ENETUNREACH"


def test_real_kernel_lookup_of_loopback():
    with rtnl.RouteLookup() as lookup:
        answer = lookup.lookup(rtnl.Query(dst=ipaddress.ip_address("127.0.0.1")))
    assert answer.error is None and answer.type == 2  # RTN_LOCAL
