// The mountinfo parser (cgroup/layout.h). Invariants: no crash or throw; at most one mount per
// line; decoded fields never grow (an octal escape shrinks four bytes to one); a parsed file
// re-parses to the same mounts when one of its lines is repeated.
#include <string>

#include "cgroup/layout.h"
#include "fuzz_check.h"

using nodemeter::cgroup::parse_mountinfo;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = nodemeter::fuzz::as_text(data, size);
  const auto mounts = parse_mountinfo(text);
  if (!mounts) {
    FUZZ_CHECK(mounts.error().line.size() <= 120, "error lines are truncated to 120 bytes");
    return 0;
  }
  size_t lines = 1;
  for (char c : text)
    lines += c == '\n';
  FUZZ_CHECK(mounts->size() <= lines, "at most one mount per line");
  for (const auto& m : *mounts) {
    for (const std::string* field : {&m.mount_point, &m.root, &m.fs_type, &m.super_options}) {
      FUZZ_CHECK(field->size() <= text.size(), "decoding never grows a field");
    }
  }
  // Every accepted line is self-contained: the text twice over is every mount twice over.
  std::string twice(text);
  if (!twice.empty() && twice.back() != '\n') twice += '\n';
  twice += text;
  const auto doubled = parse_mountinfo(twice);
  FUZZ_CHECK(doubled && doubled->size() == 2 * mounts->size(), "lines parse independently");
  for (size_t i = 0; i < mounts->size(); ++i) {
    const auto& a = (*mounts)[i];
    const auto& b = (*doubled)[mounts->size() + i];
    FUZZ_CHECK(a.mount_point == b.mount_point && a.root == b.root && a.fs_type == b.fs_type &&
                   a.super_options == b.super_options,
               "the same line gives the same mount");
  }
  return 0;
}
