"""The parallel run's grouping (``tests/conftest.py``): tests sharing an engine, directly or
through other tests, run on one worker; the rest are free to spread."""

from types import SimpleNamespace

from tests.conftest import _shared_fixture_keys, xdist_groups


def test_items_linked_through_shared_keys_form_one_group():
    groups = xdist_groups([
        ["session:tts_tiny"],
        [],
        ["package:tests/server:server", "session:tts_tiny"],  # links the server's tests to tts_tiny's
        ["package:tests/server:server"],
        ["module:tests/t3/llama/test_bf16.py"],
        ["session:turbo_tts"],
        ["package:tests/server:turbo_server", "session:turbo_tts"],
        ["module:tests/t3/llama/test_bf16.py"],
    ])
    assert groups[1] is None  # shares nothing: free
    assert groups[0] == groups[2] == groups[3]
    assert groups[5] == groups[6]
    assert groups[4] == groups[7]
    assert len({groups[0], groups[4], groups[5]}) == 3


def test_a_later_item_can_join_two_existing_groups():
    groups = xdist_groups([["a"], ["b"], ["c"], ["a", "b"], ["b", "c"]])
    assert len(set(groups)) == 1


def fixture(scope: str, baseid: str = ""):
    return [SimpleNamespace(scope=scope, baseid=baseid)]


def item(nodeid: str, fixtures: dict, used: list[str], params: dict | None = None):
    return SimpleNamespace(nodeid=nodeid, fixturenames=used, _fixtureinfo=SimpleNamespace(name2fixturedefs=fixtures),
                           callspec=SimpleNamespace(params=params or {}))


def test_what_a_test_shares():
    fixtures = {"tts_tiny": fixture("session"), "tmp_path_factory": fixture("session"),
                "server": fixture("package", "tests/server"), "ray_server": fixture("module"),
                "tmp_path": fixture("function"), "unused_engine": fixture("package", "tests/t3")}
    used = ["tts_tiny", "tmp_path_factory", "server", "ray_server", "tmp_path"]
    assert _shared_fixture_keys(item("tests/server/test_ray.py::test_x", fixtures, used)) == {
        "session:tts_tiny", "package:tests/server:server", "module:tests/server/test_ray.py"}
    # A session engine asked for by name in a parameter (request.getfixturevalue) counts too.
    by_name = item("tests/test_x.py::test_y[turbo]", {}, [], params={"tts": "turbo_tts", "n": 3})
    assert _shared_fixture_keys(by_name) == {"session:turbo_tts"}
    assert _shared_fixture_keys(item("tests/test_x.py::test_z", {"tmp_path": fixture("function")},
                                     ["tmp_path"])) == set()
