#include "agent/flags.h"

#include <unistd.h>

#include <charconv>
#include <cmath>
#include <optional>

namespace nodemeter::agent {

boost::system::result<std::chrono::nanoseconds, std::string> parse_duration(std::string_view text) {
  const std::string original(text);
  auto bad = [&](std::string why) {
    return "\"" + original + "\" is not a duration (" + why + "; use e.g. 500ms, 5s, 1m)";
  };
  if (text.empty()) return bad("empty");
  if (text == "0") return std::chrono::nanoseconds{0};
  long double total_ns = 0;
  while (!text.empty()) {
    size_t i = 0;
    while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.'))
      ++i;
    if (i == 0) return bad("expected a number");
    double number = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + i, number);
    if (ec != std::errc{} || ptr != text.data() + i) return bad("bad number");
    text.remove_prefix(i);
    size_t u = 0;
    while (u < text.size() && !((text[u] >= '0' && text[u] <= '9') || text[u] == '.'))
      ++u;
    const std::string_view unit = text.substr(0, u);
    text.remove_prefix(u);
    long double scale = 0;
    if (unit == "ns") {
      scale = 1;
    } else if (unit == "us" || unit == "\xC2\xB5s") {
      scale = 1e3;
    } else if (unit == "ms") {
      scale = 1e6;
    } else if (unit == "s") {
      scale = 1e9;
    } else if (unit == "m") {
      scale = 60e9;
    } else if (unit == "h") {
      scale = 3600e9;
    } else if (unit.empty()) {
      return bad("missing unit");
    } else {
      return bad("unknown unit \"" + std::string(unit) + "\"");
    }
    total_ns += static_cast<long double>(number) * scale;
  }
  if (total_ns > 9.2e18L) return bad("too long");
  return std::chrono::nanoseconds{
      static_cast<int64_t>(std::llround(static_cast<double>(total_ns)))};
}

std::string format_duration(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  if (d == nanoseconds{0}) return "0s";
  if (d < seconds{1}) {
    if (d % milliseconds{1} == nanoseconds{0}) return std::to_string(d / milliseconds{1}) + "ms";
    return std::to_string(d.count()) + "ns";
  }
  std::string out;
  const auto h = duration_cast<hours>(d);
  d -= h;
  const auto m = duration_cast<minutes>(d);
  d -= m;
  if (h.count() > 0) out += std::to_string(h.count()) + "h";
  if (h.count() > 0 || m.count() > 0) out += std::to_string(m.count()) + "m";
  const auto ms = duration_cast<milliseconds>(d).count();
  out += std::to_string(ms / 1000);
  if (ms % 1000 != 0) {
    std::string frac = std::to_string(1000 + ms % 1000).substr(1);
    while (!frac.empty() && frac.back() == '0')
      frac.pop_back();
    out += "." + frac;
  }
  out += "s";
  return out;
}

void FlagSet::value(std::string name, std::string value_name, std::string help,
                    std::string default_text, Setter set) {
  flags_.push_back({std::move(name),
                    std::move(value_name),
                    std::move(help),
                    std::move(default_text),
                    std::move(set),
                    {}});
}

void FlagSet::boolean(std::string name, std::string help, std::function<void()> set) {
  flags_.push_back({std::move(name), "", std::move(help), "", {}, std::move(set)});
}

boost::system::result<void, std::string> FlagSet::parse(
    const std::vector<std::string>& args) const {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg.size() < 3 || arg.substr(0, 2) != "--") {
      return "nodemeter " + command_ + ": unexpected argument \"" + std::string(arg) +
             "\" (flags start with --; see --help)";
    }
    arg.remove_prefix(2);
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    const Flag* flag = nullptr;
    for (const auto& f : flags_) {
      if (f.name == name) flag = &f;
    }
    if (!flag) {
      return "nodemeter " + command_ + ": unknown flag --" + std::string(name) + " (see --help)";
    }
    if (flag->value_name.empty()) {
      if (inline_value && *inline_value != "true") {
        if (*inline_value == "false") continue;
        return "nodemeter " + command_ + ": flag --" + flag->name + " takes no value";
      }
      flag->set_bool();
      continue;
    }
    std::string_view value;
    if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return "nodemeter " + command_ + ": flag --" + flag->name + " needs a value (" +
             flag->value_name + ")";
    }
    if (std::string why = flag->set(value); !why.empty()) {
      return "nodemeter " + command_ + ": --" + flag->name + ": " + why;
    }
  }
  return {};
}

std::string FlagSet::usage() const {
  std::string out = "Usage: nodemeter " + command_ + " [flags]\n\nFlags:\n";
  for (const auto& f : flags_) {
    std::string head = "  --" + f.name;
    if (!f.value_name.empty()) head += " " + f.value_name;
    out += head;
    out += head.size() < 34 ? std::string(34 - head.size(), ' ') : "\n" + std::string(34, ' ');
    out += f.help;
    if (!f.default_text.empty()) out += " (default " + f.default_text + ")";
    out += '\n';
  }
  return out;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

}  // namespace nodemeter::agent
