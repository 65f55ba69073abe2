"""normexp-bench's markdown: a run of some sections replaces those and keeps the others (no timing here)."""

from normexp.bench import SECTIONS, section_markdown, write_markdown


def test_writing_some_sections_keeps_the_others_in_section_order(tmp_path):
    path = tmp_path / "bench.md"
    write_markdown(path, {"sweep": section_markdown("sweep", [("s", ">= 1.7", 1.6, 1.7, 1.8)], "cmd a")})
    overhead = section_markdown("overhead", [("o", "<= 1.05", 1.0, 1.01, 1.02)], "cmd b")
    write_markdown(path, {"overhead": overhead})
    text = path.read_text()
    assert text.count("## sweep") == 1 and text.count("## overhead") == 1
    assert text.index("## overhead") < text.index("## sweep")  # SECTIONS order, not writing order
    assert "| s | >= 1.7 | 1.6 | 1.7 | 1.8 |" in text and "`cmd a`" in text
    write_markdown(path, {"sweep": section_markdown("sweep", [("s", ">= 1.7", 1.9, 2.0, 2.1)], "cmd c")})
    text = path.read_text()
    assert "| s | >= 1.7 | 1.9 | 2 | 2.1 |" in text and "`cmd a`" not in text and "`cmd b`" in text
    assert list(SECTIONS)[:2] == ["overhead", "probes"]
