"""The keep-alive pool's shared parts (master/core/pool.py): its descriptor range, its table, its messages."""
from __future__ import annotations

import os
import select
import socket

from master.core import pool


def test_the_range_is_the_upper_half_of_the_descriptor_limit():
    assert pool.number_range(20000) == (10000, pool.MAX_SLOTS)
    assert pool.number_range(1024) == (512, 512)  # a small limit: a small pool, never past the limit
    base, slots = pool.number_range(1 << 20)  # a huge limit: the range stays low, so tables stay small
    assert base == pool.TOP_BASE and slots == pool.MAX_SLOTS


def test_a_tiny_limit_leaves_no_room_rather_than_a_range_past_it():
    base, slots = pool.number_range(100)
    assert base + slots <= 100


def test_the_table_is_shared_between_two_mappings_of_one_memfd():
    table = pool.Table.create(8)
    other = pool.Table(os.dup(table.fd), 8)
    try:
        table.set(3, pool.OWNER, 2)
        table.set(3, pool.IDLE_SINCE_NS, 12345)
        assert other.get(3, pool.OWNER) == 2 and other.get(3, pool.IDLE_SINCE_NS) == 12345
        assert other.get(2, pool.OWNER) == 0 and other.get(4, pool.OWNER) == 0  # slots do not overlap
    finally:
        table.close()
        other.close()


def test_a_message_carries_numbers_peers_and_descriptors():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a, b = socket.socketpair()
    try:
        pool.send(ours, pool.ADD, [(10007, 3, ("10.0.0.1", 5555)), (10009, 1, None)], [a.fileno(), b.fileno()])
        kind, items, fds = pool.receive(theirs)
        assert kind == pool.ADD
        assert items == [(10007, 3, ("10.0.0.1", 5555)), (10009, 1, None)]
        assert len(fds) == 2
        os.write(fds[0], b"x")  # the first descriptor is `a`'s connection: `b` reads it
        assert b.recv(1) == b"x"
        for fd in fds:
            os.close(fd)
        pool.send(theirs, pool.CLOSED, [(10007, 3, None)])
        assert pool.receive(ours) == (pool.CLOSED, [(10007, 3, None)], [])
    finally:
        for s in (ours, theirs, a, b):
            s.close()


def test_an_ipv6_peer_and_garbage_lines_decode_safely():
    data, _ = pool.encode(pool.DROP, [(10001, 2, ("::1", 80))])
    assert pool.decode(data, []) == (pool.DROP, [(10001, 2, ("::1", 80))], [])
    assert pool.decode(b"D\nnot a line\n12 x\n12 x - 0\n", []) == (pool.DROP, [], [])


def test_the_end_of_the_link_reads_as_none():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.close()
    try:
        assert pool.receive(theirs) is None
    finally:
        theirs.close()


def test_one_shot_arming_reports_a_request_to_one_poller_only():
    """What the pool relies on: two holders of one epoll set, one event each time it is armed."""
    shared = select.epoll()
    client, server = socket.socketpair()
    try:
        shared.register(server.fileno(), pool.ARM)
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        first = shared.poll(0)
        assert [fd for fd, _ in first] == [server.fileno()]
        assert shared.poll(0) == []  # disarmed: a second worker looking now gets nothing
        shared.modify(server.fileno(), pool.ARM)  # re-armed with the bytes still unread: reported again
        assert [fd for fd, _ in shared.poll(0)] == [server.fileno()]
    finally:
        shared.close()
        client.close()
        server.close()


def test_a_workers_share_of_the_pool_is_an_even_split_rounded_up():
    table = pool.Table.create(16)
    try:
        assert table.share() == 0  # nothing pooled, nobody taking
        table.set(table.slots, pool.MEMBERS, 32)
        assert table.share() == 32  # no takers known: no limit below the whole pool
        table.set(table.slots, pool.TAKERS, 2)
        assert table.share() == 16
        table.set(table.slots, pool.TAKERS, 3)
        assert table.share() == 11
        table.set(15, pool.OWNER, 7)  # the figures live past the last slot, never in one
        assert table.share() == 11 and table.get(15, pool.OWNER) == 7
        table.set(table.slots, pool.CLIENTS, 45)  # every keep-alive client, pooled or kept by a worker
        assert table.share() == 15
        table.set(table.slots, pool.CLIENTS, 10)  # counted before more were pooled: the pool is the floor
        assert table.share() == 11
    finally:
        table.close()


def test_a_worker_keeps_a_pooled_connection_only_within_its_share_of_all_clients():
    assert pool.may_keep(7, False, 8)  # this one makes 8: kept until its client pauses
    assert not pool.may_keep(8, False, 8)  # it would make 9: back to the set after this request
    assert pool.may_keep(8, True, 8)  # already one of the 8
    assert not pool.may_keep(12, True, 8)  # a worker holding more from its lane keeps none of the pool
