// The runtimes' config.json readers and the RFC 3339 parser (agent/identity.h). The input is read
// three ways: as a whole config.json for containerd and for CRI-O; as the text of CRI-O's Created
// and Labels annotations inside a valid sandbox config (reaching the nested labels parser); and
// as an RFC 3339 time. Invariants: an error exactly when the text is not a JSON object; the
// kubelet's own keys never become pod labels; a parsed time formats back (UTC, nanoseconds) to
// a text that parses to the same instant.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/identity.h"
#include "fuzz_check.h"

namespace {

using namespace nodemeter::agent;
using nlohmann::json;

void check_config(std::string_view text, const ConfigParse& parsed) {
  const json doc = json::parse(text.begin(), text.end(), nullptr, false);
  const bool object = !doc.is_discarded() && doc.is_object();
  FUZZ_CHECK(parsed.error.empty() == object, "an error exactly for text that is no JSON object");
  FUZZ_CHECK(!(parsed.record && !parsed.error.empty()), "never a record and an error");
  if (!parsed.record) return;
  for (const char* own : {"io.kubernetes.pod.name", "io.kubernetes.pod.namespace",
                          "io.kubernetes.pod.uid", "io.kubernetes.container.name"}) {
    FUZZ_CHECK(!parsed.record->pod_labels.contains(own), "runtime keys are not pod labels");
  }
}

std::optional<std::string> format_rfc3339_utc(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day date{day};
  if (date.year() < year{0} || date.year() > year{9999}) return std::nullopt;
  const auto in_day = duration_cast<nanoseconds>(t - day);
  const hh_mm_ss clock{in_day};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%09lldZ",
                static_cast<int>(date.year()), static_cast<unsigned>(date.month()),
                static_cast<unsigned>(date.day()), static_cast<int>(clock.hours().count()),
                static_cast<int>(clock.minutes().count()),
                static_cast<int>(clock.seconds().count()),
                static_cast<long long>(clock.subseconds().count()));
  return std::string(buf);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = nodemeter::fuzz::as_text(data, size);
  check_config(text, parse_containerd_config(text));
  check_config(text, parse_crio_config(text));

  const std::string as_string(text);
  const json sandbox = {{"annotations",
                         {{"io.kubernetes.cri-o.ContainerType", "sandbox"},
                          {"io.kubernetes.pod.name", "web-1"},
                          {"io.kubernetes.pod.namespace", "default"},
                          {"io.kubernetes.pod.uid", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"},
                          {"io.kubernetes.container.name", "POD"},
                          {"io.kubernetes.cri-o.Created", as_string},
                          {"io.kubernetes.cri-o.Labels", as_string}}}};
  // Invalid UTF-8 cannot be dumped as JSON; such bytes still went through the two parsers above.
  const std::string sandbox_text = sandbox.dump(-1, ' ', false, json::error_handler_t::replace);
  const ConfigParse crio = parse_crio_config(sandbox_text);
  check_config(sandbox_text, crio);
  FUZZ_CHECK(crio.record && crio.record->is_sandbox && crio.record->pod_name == "web-1",
             "a CRI-O sandbox config is read whatever its Created and Labels say");

  if (const auto t = parse_rfc3339(text)) {
    // An accepted time is ASCII, so the annotation holds it unchanged.
    FUZZ_CHECK(crio.record->created == t, "the Created annotation is read with parse_rfc3339");
    if (const auto formatted = format_rfc3339_utc(*t)) {
      FUZZ_CHECK(parse_rfc3339(*formatted) == t, "a parsed time round-trips through UTC");
    }
  }
  return 0;
}
