// A test case whose name CMake's list handling splits in two (it holds a ';'). Registered with plm_unit_test's
// discovery and WILL_FAIL: each entry must fail, either because it names no test case (--warn NoTests) or because
// it runs this case, which fails. If an entry ever passes, the discovery lets a mangled name pass silently again.
#include <catch2/catch.hpp>

TEST_CASE("a case whose name holds a ; semicolon") {
  FAIL("this case always fails: its ctest entries are marked WILL_FAIL");
}
