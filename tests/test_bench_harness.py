"""`sigmatch bench`'s harness on a tiny workload: every stage reports, the table and the
RESULTS line carry the machine. Behaviour only: no figure is asserted."""
from bench.run import format_table, record, run_benchmarks

STAGES = ("load_s", "decode_eps", "match_eps", "sink_rps", "end_to_end_eps", "end_to_end_ns",
          "bytes_per_subscriber", "peak_rss_gb")


def test_tiny_workload_reports_every_stage(tmp_path):
    [result] = run_benchmarks(["T"], sizes={"T": (2_000, 20_000)}, campaigns=2, directory=tmp_path,
                              echo=lambda line: None)
    assert result["workload"] == "T" and result["subscribers"] == 2_000 and result["events"] == 20_000
    for stage in STAGES:
        assert result[stage] is not None and result[stage] > 0, stage
    table = format_table([result])
    assert table.splitlines()[0].split()[0] == "workload" and "20,000" in table
    results = tmp_path / "RESULTS.md"
    record([result], results)
    line = results.read_text().strip()
    assert line.startswith("| 20") and "cores" in line and "| T |" in line
    # the world is kept in the directory and reused by a second run
    again = run_benchmarks(["T"], sizes={"T": (2_000, 20_000)}, campaigns=2, directory=tmp_path,
                           echo=lambda line: None)
    assert again[0]["actions"] == result["actions"]
