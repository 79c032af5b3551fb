"""`bench.group_join --quick`: a peer-to-peer group and a relay group built for real (a queue
server process, worker processes, SQLite files), every figure the relay part promises printed,
and the plot written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_prints_the_relay_figures_and_draws_the_plot(tmp_path: Path) -> None:
    svg = tmp_path / "group_join.svg"
    command = [sys.executable, "-m", "bench.group_join", "--quick", "--json"]
    command += ["--sizes", "3", "--workers", "2", "--svg", str(svg)]
    run = subprocess.run(
        command, check=False, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.returncode == 0, run.stderr
    figures = {
        name.removeprefix("group_join."): figure["value"]
        for name, figure in json.loads(run.stdout)["figures"].items()
    }
    for size in (3, 6):
        assert figures[f"relay_{size}_functional_median_s"] > 0
        assert (
            figures[f"relay_{size}_functional_median_s"]
            <= figures[f"relay_{size}_connected_median_s"]
        )
        # O(relays): one connection per relay, at each end.
        assert figures[f"agent_connections_per_join_relay_{size}"] == 2 * figures["relays"]
    assert figures["agent_connections_per_join_p2p_3"] == 2 * 2  # 2 existing members
    assert figures["relay_6_functional_ratio_to_3"] > 0
    assert isinstance(figures["relay_target_met_ratio_le_1.5"], bool)
    assert figures["relay_fanout_5_members_forwards_per_s"] > 0
    assert figures["plain_send_1_connection_per_s"] > 0
    assert figures["relay_fanout_ratio_to_plain_send"] > 0
    assert (
        figures["relay_fanout_sample_members_with_every_forward"]
        == figures["relay_fanout_sample_members"]
    )
    drawing = svg.read_text()
    assert drawing.startswith("<svg") and "peer to peer" in drawing and "relay group" in drawing
