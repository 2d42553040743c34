"""Packet capture with scapy: one sniffer per interface, BPF-filtered,
always stopped. Imported only by leakcheck.active when a check runs."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class Sniffers:
    """Context manager: sniff `ifaces` with `bpf` until the block ends.
    `packets` holds (interface, scapy packet)."""

    def __init__(self, ifaces: list[str], bpf: str, ready_timeout: float = 1.0):
        self.ifaces = ifaces
        self.bpf = bpf
        self.ready_timeout = ready_timeout
        self.packets: list[tuple[str, bytes, str]] = []
        self._lock = threading.Lock()
        self._sniffers: list[Any] = []

    def __enter__(self) -> "Sniffers":
        logging.getLogger("scapy").setLevel(logging.ERROR)
        # heavy imports, only here; the layers let scapy decode what it sniffs
        import scapy.layers.inet  # noqa: F401
        import scapy.layers.inet6  # noqa: F401
        import scapy.layers.l2  # noqa: F401
        from scapy.sendrecv import AsyncSniffer

        ready = threading.Event()
        # one sniffer over every interface: the BPF program is compiled once
        sniffer = AsyncSniffer(iface=self.ifaces, filter=self.bpf, store=False, prn=self._keep,
                               started_callback=ready.set)
        self._sniffers.append(sniffer)
        try:
            sniffer.start()
            if not ready.wait(self.ready_timeout):
                raise RuntimeError("packet capture did not start in time")
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _keep(self, packet: Any) -> None:
        with self._lock:
            self.packets.append((packet.sniffed_on, packet))

    def _stop(self) -> None:
        for sniffer in self._sniffers:
            try:
                if sniffer.running:
                    sniffer.stop(join=True)
            except Exception as exc:  # stopping must never raise past the caller
                log.debug("stopping sniffer: %s", exc)
        self._sniffers.clear()
