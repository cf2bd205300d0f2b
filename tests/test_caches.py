"""The per-process caches are bounded by entries and by bytes: a worker sent hundreds of large
notes keeps at most its budget (issue: 460 MB -> 1 GB RSS with every 5 MB note kept)."""
from __future__ import annotations

from service.caches import BoundedCache
from service.nlp.reader import Source, TextReader
from service import record


def test_the_cache_evicts_the_oldest_past_either_bound():
    cache = BoundedCache(max_entries=3, max_bytes=100)
    for n in range(3):
        cache.put(n, f"v{n}", 10)
    assert cache.get(0) == "v0"  # 0 is now the newest
    cache.put(3, "v3", 10)       # past 3 entries: 1, the oldest, goes
    assert cache.get(1) is None and cache.get(0) == "v0" and len(cache) == 3
    cache.put(4, "v4", 85)       # past 100 bytes: the oldest go until it fits
    assert cache.bytes <= 100 and cache.get(4) == "v4"
    cache.put(5, "too big", 101)  # larger than the budget: never kept
    assert cache.get(5) is None and cache.bytes <= 100
    cache.put(4, "again", 5)     # replacing an entry charges its new size only
    assert cache.bytes == sum(size for _, size in cache._entries.values())


def _note(n: int, size: int) -> Source:
    sentence = f"Visit {n}: degenerative anterolisthesis of C1 on C2 with right C2 radiculopathy. "
    return Source(f"DocumentReference/n{n}", "content[0].attachment", sentence * (size // len(sentence)), None, False)


def test_the_reader_keeps_no_more_than_its_byte_budget_of_findings():
    reader = TextReader(source_cache_bytes=2 << 20, sentence_cache_bytes=1 << 20)
    for n in range(40):
        reader.read_all([_note(n, 20_000)])
    assert reader._sources.bytes <= 2 << 20 and reader._sentences.bytes <= 1 << 20
    assert reader._sources.evicted > 0  # the budget, not the entry count, was what bound it
    assert len(reader._sources) < 40


def test_the_parse_cache_charges_a_resource_by_its_size():
    cache = record._ParseCache(size=1000, max_bytes=1 << 20)
    big = {"resourceType": "DiagnosticReport", "id": "r", "conclusion": "x" * 200_000}
    for n in range(20):
        resource = dict(big, id=f"r{n}")
        cache.put(cache.key(resource), object())
    assert cache._models.bytes <= 1 << 20
    assert len(cache._models) < 20
