#include "agent/aggregator.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <optional>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "agent/published.h"
#include "agent/self_metrics.h"
#include "api/exposition.h"
#include "api/node_view.h"

namespace nodemeter::agent {
namespace {

using SteadyClock = std::chrono::steady_clock;

const prometheus::Histogram::BucketBoundaries kCycleBuckets{0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                            1,    2.5,   5,    10,  30,   60};

int64_t ns_of(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// An error body worth a log line: its first line, bounded.
std::string body_excerpt(const std::string& body) {
  std::string s = body.substr(0, std::min(body.find('\n'), size_t{200}));
  return s;
}

}  // namespace

std::vector<AgentTarget> static_targets(const std::vector<std::string>& urls) {
  std::vector<AgentTarget> out;
  out.reserve(urls.size());
  for (const auto& u : urls)
    out.push_back(AgentTarget{"", u});
  return out;
}

HttpClientFactory default_http_client_factory() {
  return [](boost::asio::io_context& io, std::string_view url, const kube::TlsClientOptions& tls) {
    return kube::HttpClient::create(io, url, tls, /*max_idle_connections=*/1);
  };
}

// --- self metrics --------------------------------------------------------------------------------

AggregatorMetrics::AggregatorMetrics(std::string version, std::filesystem::path proc_root)
    : registry_(std::make_shared<prometheus::Registry>()),
      proc_root_(std::move(proc_root)),
      serving_(*registry_, version) {
  auto& agents = prometheus::BuildGauge()
                     .Name("nodemeter_aggregator_agents")
                     .Help("Agents fetched in the last cycle, by state (ok, failing).")
                     .Register(*registry_);
  agents_ok_ = &agents.Add({{"state", "ok"}});
  agents_failing_ = &agents.Add({{"state", "failing"}});
  fetch_errors_ = &prometheus::BuildCounter()
                       .Name("nodemeter_aggregator_fetch_errors_total")
                       .Help(
                           "Node view fetches that failed, by reason (transport: refused, "
                           "reset, TLS or timeout; status: an HTTP status other than 200; "
                           "parse: not a node view; client: the agent's URL or TLS setup).")
                       .Register(*registry_);
  for (const char* reason : {"transport", "status", "parse", "client"})
    fetch_errors_->Add({{"reason", reason}});
  cycle_duration_ = &prometheus::BuildHistogram()
                         .Name("nodemeter_aggregator_cycle_duration_seconds")
                         .Help(
                             "Time of one cycle: every agent fetched, the cluster view merged "
                             "and published.")
                         .Register(*registry_)
                         .Add({}, kCycleBuckets);
  cycles_ = &prometheus::BuildCounter()
                 .Name("nodemeter_aggregator_cycles_total")
                 .Help("Cycles completed.")
                 .Register(*registry_)
                 .Add({});
  nodes_ = &prometheus::BuildGauge()
                .Name("nodemeter_aggregator_nodes")
                .Help("Nodes served (NodeMetrics) after the last cycle.")
                .Register(*registry_)
                .Add({});
  pods_ = &prometheus::BuildGauge()
               .Name("nodemeter_aggregator_pods")
               .Help("Pods served (PodMetrics) after the last cycle.")
               .Register(*registry_)
               .Add({});
}

void AggregatorMetrics::count_fetch_error(std::string_view reason) {
  fetch_errors_->Add({{"reason", std::string(reason)}}).Increment();
}

void AggregatorMetrics::observe_cycle(std::chrono::nanoseconds elapsed, size_t agents_ok,
                                      size_t agents_failing, size_t nodes, size_t pods) {
  cycle_duration_->Observe(std::chrono::duration<double>(elapsed).count());
  cycles_->Increment();
  agents_ok_->Set(static_cast<double>(agents_ok));
  agents_failing_->Set(static_cast<double>(agents_failing));
  nodes_->Set(static_cast<double>(nodes));
  pods_->Set(static_cast<double>(pods));
}

void AggregatorMetrics::observe_request(std::string_view path, unsigned code,
                                        std::chrono::nanoseconds elapsed) {
  serving_.observe_request(path, code, elapsed);
}

std::string AggregatorMetrics::render() const {
  return render_self_metrics(*registry_, proc_root_);
}

// --- the loop ------------------------------------------------------------------------------------

struct Aggregator::State : std::enable_shared_from_this<State> {
  struct Entry {
    std::string url;
    std::string node;  // from discovery; empty for static agents
    std::shared_ptr<kube::HttpClient> client;
    std::string client_error;               // why there is no client
    bool listed = false;                    // a target of the current cycle
    bool failing = false;                   // the last fetch failed (the state logs are about)
    int misses = 0;                         // consecutive resolutions without a fresh view
    std::optional<api::MetricsView> fresh;  // fetched in the current cycle
    bool has_data = false;                  // part of the published view, as `slice` says
    api::ViewSlice slice;
  };

  struct Cycle {
    std::vector<std::string> queue;  // entry keys to fetch
    size_t next = 0;
    size_t in_flight = 0;
    bool pumping = false;
    std::string token;
    SteadyClock::time_point start;
    CycleReport report;
    std::function<void(const CycleReport&)> done;
  };

  State(boost::asio::io_context& io_, AggregatorOptions options_, Logger& log_,
        AggregatorMetrics* metrics_, HttpClientFactory factory_)
      : io(io_),
        options(std::move(options_)),
        log(log_),
        metrics(metrics_),
        factory(std::move(factory_)),
        timer(io_) {
    if (options.max_concurrent == 0) options.max_concurrent = 1;
    current = std::make_shared<const api::MetricsView>();
    published.store(current);
    last_activity_ns = ns_of(SteadyClock::now());
  }

  boost::asio::io_context& io;
  AggregatorOptions options;
  Logger& log;
  AggregatorMetrics* metrics;
  HttpClientFactory factory;
  boost::asio::steady_timer timer;
  SteadyClock::time_point next_tick;

  std::map<std::string, Entry> entries;  // by node name, or URL where the node is unknown
  std::shared_ptr<const api::MetricsView> current;  // what the slices point into (io thread)
  Published<api::MetricsView> published;
  std::unique_ptr<Cycle> cycle;

  std::atomic<bool> stopped{false};
  std::atomic<uint64_t> cycles{0};
  std::atomic<int64_t> last_activity_ns{0};
  std::atomic<size_t> target_count{0};

  static std::string key_of(const AgentTarget& t) {
    return t.node.empty() ? "url:" + t.url : "node:" + t.node;
  }

  LogFields fields(const Entry& e) const {
    LogFields f{{"agent", e.url}};
    if (!e.node.empty()) f.emplace_back("node", e.node);
    return f;
  }

  void update_targets() {
    for (auto& [key, e] : entries)
      e.listed = false;
    std::vector<AgentTarget> targets =
        options.targets ? options.targets() : std::vector<AgentTarget>{};
    for (const auto& t : targets) {
      Entry& e = entries[key_of(t)];
      e.listed = true;
      e.node = t.node;
      if (e.url == t.url && (e.client || !e.client_error.empty())) continue;
      if (e.client) e.client->shutdown();  // a new agent pod on the node: a new address
      e.client.reset();
      e.client_error.clear();
      e.url = t.url;
      auto client = factory(io, t.url, options.agent_tls);
      if (client) {
        e.client = std::move(*client);
      } else {
        e.client_error = client.error();
      }
    }
  }

  void run_cycle(std::function<void(const CycleReport&)> done) {
    cycle = std::make_unique<Cycle>();
    cycle->start = SteadyClock::now();
    cycle->done = std::move(done);
    cycle->token = options.bearer_token ? options.bearer_token() : std::string();
    update_targets();
    size_t listed = 0;
    for (auto& [key, e] : entries) {
      if (!e.listed) continue;
      ++listed;
      if (e.client) {
        cycle->queue.push_back(key);
      } else {
        fail(e, "client", e.client_error);
      }
    }
    target_count = listed;
    cycle->report.agents = listed;
    pump();
  }

  // Starts fetches up to the bound; finishes the cycle when none is left. Re-entrant: a client
  // that answers at once calls back into it.
  void pump() {
    Cycle& c = *cycle;
    if (c.pumping) return;
    c.pumping = true;
    while (c.in_flight < options.max_concurrent && c.next < c.queue.size()) {
      const std::string& key = c.queue[c.next++];
      Entry& e = entries.at(key);
      kube::HttpRequest req;
      req.target = std::string(api::kNodeViewPath);
      req.timeout = options.agent_timeout;
      req.headers.emplace_back("Accept", std::string(api::kNodeViewContentType));
      req.headers.emplace_back("User-Agent", options.user_agent);
      if (!c.token.empty()) req.headers.emplace_back("Authorization", "Bearer " + c.token);
      ++c.in_flight;
      e.client->request(std::move(req), [self = shared_from_this(), key](kube::HttpResult r) {
        self->on_fetched(key, std::move(r));
      });
    }
    c.pumping = false;
    if (c.in_flight == 0 && c.next == c.queue.size()) finish();
  }

  void on_fetched(const std::string& key, kube::HttpResult result) {
    if (stopped || !cycle) return;
    --cycle->in_flight;
    const auto it = entries.find(key);
    if (it != entries.end()) {
      Entry& e = it->second;
      if (!result) {
        fail(e, "transport", result.error());
      } else if (result->status != 200) {
        fail(e, "status",
             "HTTP " + std::to_string(result->status) + " from " + e.url +
                 std::string(api::kNodeViewPath) + ": " + body_excerpt(result->body));
      } else if (auto view = api::parse_node_view(result->body); !view) {
        fail(e, "parse", e.url + std::string(api::kNodeViewPath) + ": " + view.error());
      } else {
        std::string().swap(result->body);
        e.fresh = std::move(*view);
        ++cycle->report.ok;
        if (e.failing) {
          log.info("agent recovered", fields(e));
          e.failing = false;
        }
      }
    }
    pump();
  }

  void fail(Entry& e, std::string_view reason, const std::string& message) {
    ++cycle->report.failed;
    if (metrics) metrics->count_fetch_error(reason);
    if (!e.failing) {
      LogFields f = fields(e);
      f.emplace_back("reason", std::string(reason));
      f.emplace_back("error", message);
      log.warn("agent failing", f);
      e.failing = true;
    }
  }

  void finish() {
    std::unique_ptr<Cycle> c = std::move(cycle);
    std::vector<api::MetricsView> sources;
    std::vector<Entry*> owners;
    sources.reserve(entries.size());
    owners.reserve(entries.size());
    for (auto& [key, e] : entries) {
      if (e.fresh) {
        e.misses = 0;
        sources.push_back(std::move(*e.fresh));
        e.fresh.reset();
        owners.push_back(&e);
        continue;
      }
      ++e.misses;
      if (!e.has_data) continue;
      if (e.misses < options.missed_resolutions_to_forget) {
        sources.push_back(api::extract_view(*current, e.slice));
        owners.push_back(&e);
        continue;
      }
      LogFields f = fields(e);
      std::string nodes;
      for (uint32_t i : e.slice.nodes)
        nodes += (nodes.empty() ? "" : ",") + current->nodes[i].name;
      for (const std::string* n : e.slice.known_nodes)
        nodes += (nodes.empty() ? "" : ",") + *n;
      if (!nodes.empty()) f.emplace_back("nodes", nodes);
      f.emplace_back("missed", std::to_string(e.misses));
      log.info("node forgotten", f);
      e.has_data = false;
      e.slice = {};
      ++c->report.forgotten;
    }
    api::MergedView merged = api::merge_views(std::move(sources));
    for (size_t i = 0; i < owners.size(); ++i) {
      owners[i]->slice = std::move(merged.slices[i]);
      owners[i]->has_data = true;
    }
    auto view = std::make_shared<const api::MetricsView>(std::move(merged.view));
    published.store(view);
    current = std::move(view);  // the previous view lives on while requests still use it
#if defined(__GLIBC__)
    // The previous view, the parsed documents and the response bodies are free now, scattered
    // over the heap between live blocks; without this glibc keeps those pages resident, and the
    // process holds about two cluster views' worth of memory instead of one.
    malloc_trim(0);
#endif

    for (auto it = entries.begin(); it != entries.end();) {
      if (!it->second.listed && !it->second.has_data) {
        if (it->second.client) it->second.client->shutdown();
        it = entries.erase(it);
      } else {
        ++it;
      }
    }
    size_t failing = 0;
    for (const auto& [key, e] : entries)
      failing += e.listed && e.failing;

    const auto end = SteadyClock::now();
    c->report.nodes = current->nodes.size();
    c->report.pods = current->pods.size();
    c->report.elapsed = end - c->start;
    if (metrics) {
      metrics->observe_cycle(c->report.elapsed, c->report.agents - failing, failing,
                             c->report.nodes, c->report.pods);
    }
    last_activity_ns = ns_of(end);
    ++cycles;
    if (c->done) c->done(c->report);
  }

  void schedule() {
    if (stopped) return;
    const auto now = SteadyClock::now();
    while (next_tick <= now)
      next_tick += std::chrono::duration_cast<SteadyClock::duration>(options.resolution);
    timer.expires_at(next_tick);
    timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->stopped) return;
      self->run_cycle([self](const CycleReport&) { self->schedule(); });
    });
  }

  void shutdown() {
    timer.cancel();
    cycle.reset();
    for (auto& [key, e] : entries) {
      if (e.client) e.client->shutdown();
    }
  }
};

Aggregator::Aggregator(boost::asio::io_context& io, AggregatorOptions options, Logger& log,
                       AggregatorMetrics* metrics, HttpClientFactory factory)
    : state_(std::make_shared<State>(io, std::move(options), log, metrics, std::move(factory))) {}

Aggregator::~Aggregator() {
  stop();
}

void Aggregator::run_cycle(std::function<void(const CycleReport&)> done) {
  state_->run_cycle(std::move(done));
}

void Aggregator::start() {
  state_->next_tick = SteadyClock::now();
  state_->run_cycle([self = state_](const CycleReport&) { self->schedule(); });
}

void Aggregator::stop() {
  if (state_->stopped.exchange(true)) return;
  boost::asio::post(state_->io, [self = state_] { self->shutdown(); });
}

std::shared_ptr<const api::MetricsView> Aggregator::view() const {
  return state_->published.load();
}

uint64_t Aggregator::cycles() const {
  return state_->cycles.load();
}

bool Aggregator::live(std::chrono::steady_clock::time_point now) const {
  const auto& o = state_->options;
  const size_t targets = state_->target_count.load();
  const auto rounds = static_cast<int64_t>((targets + o.max_concurrent - 1) / o.max_concurrent);
  const std::chrono::nanoseconds bound = 3 * o.resolution + rounds * o.agent_timeout;
  return ns_of(now) - state_->last_activity_ns.load() <= bound.count();
}

}  // namespace nodemeter::agent
