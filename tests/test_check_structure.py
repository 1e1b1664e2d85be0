"""scripts/check_structure.py's C++/CUDA function finder (CI fails a csrc function over 120 lines without a
``// long:`` reason)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_structure", REPO / "scripts" / "check_structure.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SOURCE = """#include <vector>
namespace a {
struct S {
  int f(int x) const { return x; }
};
// a comment with a brace {
template <int D, class K>
void g(std::vector<int>& v,
       int n) {
  auto lam = [&](int i) {
    if (i > 0) {
      v.push_back(i);
    }
  };
  for (int i = 0; i < n; ++i) lam(i);
  const char* s = "}";
}
__global__ void k(float* x) { x[0] = 1.0f; }
int S2::h() noexcept {
  return 0;
}
}  // namespace a
"""


def test_cxx_functions_finds_outermost_bodies_with_their_lines():
    found = _checker().cxx_functions(SOURCE)
    assert found == [("f", 4, 4), ("g", 7, 17), ("k", 18, 18), ("S2::h", 19, 21)]


def test_long_cxx_function_needs_a_reason(tmp_path, monkeypatch):
    chk = _checker()
    body = "\n".join(f"  x += {i};" for i in range(chk.MAX_LINES))
    src = tmp_path / "long.cpp"
    monkeypatch.setattr(chk, "ROOT", tmp_path)
    src.write_text(f"template <class T>\nint longer(int x) {{\n{body}\n  return x;\n}}\n")
    problems = chk.long_cxx_functions(src)
    assert len(problems) == 1 and "long.cpp:1 longer is" in problems[0]
    src.write_text("// long: one straight sequence\n" + src.read_text())
    assert chk.long_cxx_functions(src) == []
