#include "agent/self_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include "agent/sampler.h"
#include "api/exposition.h"

namespace nodemeter::agent {
namespace {

const prometheus::Histogram::BucketBoundaries kPassBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                           0.1,   0.25,   0.5,   1,    2.5};
const prometheus::Histogram::BucketBoundaries kReadBuckets{1e-6, 2.5e-6, 5e-6,   1e-5, 2.5e-5,
                                                           5e-5, 1e-4,   2.5e-4, 1e-3, 1e-2};
const prometheus::Histogram::BucketBoundaries kHttpBuckets{0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                           0.025,  0.05,  0.1,    0.25,  1};

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

prometheus::MetricFamily gauge_family(std::string name, std::string help, double value,
                                      prometheus::MetricType type = prometheus::MetricType::Gauge) {
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return prometheus::MetricFamily{std::move(name), std::move(help), type, {m}};
}

}  // namespace

std::vector<prometheus::MetricFamily> process_families(const std::filesystem::path& proc_root) {
  std::vector<prometheus::MetricFamily> out;
  const std::string stat = slurp(proc_root / "self/stat");
  // Fields after the command (which may hold spaces) start after the last ')'.
  const auto close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> f;
    std::string tok;
    while (fields >> tok)
      f.push_back(tok);
    // f[0] is field 3 (state): utime = field 14 -> f[11], stime f[12], starttime f[19],
    // vsize f[20], rss (pages) f[21].
    if (f.size() > 21) {
      const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
      out.push_back(gauge_family("process_cpu_seconds_total",
                                 "Total user and system CPU time spent in seconds.", cpu,
                                 prometheus::MetricType::Counter));
      const auto boot_time = read_boot_time(proc_root);
      const double boot =
          boot_time ? std::chrono::duration<double>(boot_time->time_since_epoch()).count() : 0;
      out.push_back(gauge_family("process_start_time_seconds",
                                 "Start time of the process since unix epoch in seconds.",
                                 boot + std::stod(f[19]) / ticks));
      out.push_back(gauge_family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                 std::stod(f[20])));
      out.push_back(gauge_family("process_resident_memory_bytes", "Resident memory size in bytes.",
                                 std::stod(f[21]) * page));
    }
  }
  size_t fds = 0;
  if (DIR* d = opendir((proc_root / "self/fd").c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++fds;
    }
    closedir(d);
    if (fds > 0) --fds;  // the descriptor opendir itself holds
  }
  out.push_back(gauge_family("process_open_fds", "Number of open file descriptors.",
                             static_cast<double>(fds)));
  struct rlimit rl {};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    out.push_back(gauge_family("process_max_fds", "Maximum number of open file descriptors.",
                               static_cast<double>(rl.rlim_cur)));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

ServingMetrics::ServingMetrics(prometheus::Registry& registry, const std::string& version)
    : requests_(&prometheus::BuildCounter()
                     .Name("nodemeter_http_requests_total")
                     .Help("HTTP requests answered, by route and status code.")
                     .Register(registry)),
      duration_(&prometheus::BuildHistogram()
                     .Name("nodemeter_http_request_duration_seconds")
                     .Help("Time to answer an HTTP request, by route.")
                     .Register(registry)) {
  prometheus::BuildGauge()
      .Name("nodemeter_build_info")
      .Help("A metric with a constant '1' value labeled by the version nodemeter was built from.")
      .Register(registry)
      .Add({{"version", version}})
      .Set(1);
}

void ServingMetrics::observe_request(std::string_view path, unsigned code,
                                     std::chrono::nanoseconds elapsed) {
  const std::string p(path);
  requests_->Add({{"code", std::to_string(code)}, {"path", p}}).Increment();
  duration_->Add({{"path", p}}, kHttpBuckets)
      .Observe(std::chrono::duration<double>(elapsed).count());
}

SelfMetrics::SelfMetrics(std::string version, cgroup::Mode mode, std::filesystem::path proc_root)
    : registry_(std::make_shared<prometheus::Registry>()),
      mode_(mode),
      proc_root_(std::move(proc_root)),
      serving_(*registry_, version) {
  pass_duration_ =
      &prometheus::BuildHistogram()
           .Name("nodemeter_collection_duration_seconds")
           .Help("Time of one collection pass: scan, identity, cgroup reads and the store.")
           .Register(*registry_)
           .Add({}, kPassBuckets);
  read_duration_family_ = &prometheus::BuildHistogram()
                               .Name("nodemeter_cgroup_read_duration_seconds")
                               .Help("Time to read and parse one cgroup file, by file.")
                               .Register(*registry_);
  read_errors_ =
      &prometheus::BuildCounter()
           .Name("nodemeter_cgroup_read_errors_total")
           .Help(
               "Cgroup file reads that failed, by file and reason (gone, unsupported, io, parse).")
           .Register(*registry_);
  containers_ = &prometheus::BuildGauge()
                     .Name("nodemeter_containers")
                     .Help("Containers tracked in the last pass.")
                     .Register(*registry_)
                     .Add({});
  pods_ = &prometheus::BuildGauge()
               .Name("nodemeter_pods")
               .Help("Pods tracked in the last pass.")
               .Register(*registry_)
               .Add({});
  guard_outcomes_ =
      &prometheus::BuildCounter()
           .Name("nodemeter_http_authorization_total")
           .Help(
               "Guarded HTTP requests by what authentication and authorization decided: allowed, "
               "unauthenticated, forbidden, or error (a review the API server did not answer).")
           .Register(*registry_);
}

void SelfMetrics::on_file_read(cgroup::FileKind kind, std::chrono::nanoseconds elapsed,
                               const cgroup::ReadError* error) {
  const auto i = static_cast<size_t>(kind);
  if (!read_duration_[i]) {
    read_duration_[i] =
        &read_duration_family_->Add({{"file", cgroup::file_name(kind, mode_)}}, kReadBuckets);
  }
  read_duration_[i]->Observe(std::chrono::duration<double>(elapsed).count());
  if (error) count_read_error(cgroup::file_name(kind, mode_), cgroup::to_string(error->kind));
}

void SelfMetrics::count_read_error(std::string_view file, std::string_view reason) {
  read_errors_->Add({{"file", std::string(file)}, {"reason", std::string(reason)}}).Increment();
}

void SelfMetrics::observe_pass(std::chrono::nanoseconds elapsed, size_t pods, size_t containers) {
  pass_duration_->Observe(std::chrono::duration<double>(elapsed).count());
  pods_->Set(static_cast<double>(pods));
  containers_->Set(static_cast<double>(containers));
}

void SelfMetrics::observe_request(std::string_view path, unsigned code,
                                  std::chrono::nanoseconds elapsed) {
  serving_.observe_request(path, code, elapsed);
}

void SelfMetrics::count_guard_outcome(std::string_view outcome) {
  guard_outcomes_->Add({{"outcome", std::string(outcome)}}).Increment();
}

void SelfMetrics::add_collector(std::function<std::vector<prometheus::MetricFamily>()> collect) {
  collectors_.push_back(std::move(collect));
}

std::vector<prometheus::MetricFamily> informer_families(const std::string& prefix,
                                                        const kube::PodInformer::Status& status) {
  std::vector<prometheus::MetricFamily> out;
  auto add = [&](const std::string& suffix, const std::string& help, prometheus::MetricType type,
                 double value) {
    prometheus::MetricFamily f;
    f.name = prefix + suffix;
    f.help = help;
    f.type = type;
    prometheus::ClientMetric m;
    if (type == prometheus::MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    f.metric.push_back(std::move(m));
    out.push_back(std::move(f));
  };
  using prometheus::MetricType;
  add("_synced", "1 once a complete list of the pods arrived from the API server.",
      MetricType::Gauge, status.synced ? 1 : 0);
  add("_healthy", "1 while the last exchange with the API server succeeded.", MetricType::Gauge,
      status.healthy ? 1 : 0);
  add("_pods", "Pods the watch currently knows.", MetricType::Gauge,
      static_cast<double>(status.pods));
  add("_lists_total", "Complete lists of the pods.", MetricType::Counter,
      static_cast<double>(status.lists));
  add("_watches_total", "Watches the API server accepted.", MetricType::Counter,
      static_cast<double>(status.watches));
  add("_relists_gone_total", "Lists made because the resource version expired (410 Gone).",
      MetricType::Counter, static_cast<double>(status.relists_gone));
  add("_errors_total", "Lists and watches that failed.", MetricType::Counter,
      static_cast<double>(status.errors));
  add("_events_total", "Watch events applied, bookmarks included.", MetricType::Counter,
      static_cast<double>(status.events));
  if (status.last_success) {
    add("_last_success_timestamp_seconds",
        "When the API server last answered a list or a watch, in seconds since the epoch.",
        MetricType::Gauge,
        std::chrono::duration<double>(status.last_success->time_since_epoch()).count());
  }
  return out;
}

std::string render_self_metrics(const prometheus::Registry& registry,
                                const std::filesystem::path& proc_root,
                                std::vector<prometheus::MetricFamily> more) {
  auto families = registry.Collect();
  for (auto& f : more)
    families.push_back(std::move(f));
  for (auto& f : process_families(proc_root))
    families.push_back(std::move(f));
  std::sort(families.begin(), families.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  std::string out;
  api::GoTextSerializer::render(out, families);
  return out;
}

std::string SelfMetrics::render() const {
  std::vector<prometheus::MetricFamily> more;
  for (const auto& collect : collectors_) {
    for (auto& f : collect())
      more.push_back(std::move(f));
  }
  return render_self_metrics(*registry_, proc_root_, std::move(more));
}

}  // namespace nodemeter::agent
