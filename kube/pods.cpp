#include "kube/pods.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <charconv>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>

namespace nodemeter::kube {

namespace {

namespace net = boost::asio;
using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

// A watch that ends sooner than this without an event is a server in trouble, not a timeout.
constexpr std::chrono::seconds kShortWatch{1};

const json* member(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string string_at(const json& object, const char* key) {
  const json* value = member(object, key);
  return value != nullptr && value->is_string() ? value->get<std::string>() : std::string();
}

std::optional<WallTime> time_at(const json& object, const char* key) {
  const json* value = member(object, key);
  if (value == nullptr || !value->is_string()) return std::nullopt;
  return parse_kube_time(value->get_ref<const std::string&>());
}

const json& object_at(const json& object, const char* key) {
  static const json kEmpty = json::object();
  const json* value = member(object, key);
  return value != nullptr && value->is_object() ? *value : kEmpty;
}

template <class Int>
bool digits(std::string_view text, size_t pos, size_t n, Int& out) {
  if (pos + n > text.size()) return false;
  const char* begin = text.data() + pos;
  auto [end, ec] = std::from_chars(begin, begin + n, out);
  return ec == std::errc() && end == begin + n;
}

void parse_container_statuses(const json& status, const char* key,
                              std::vector<ContainerStatus>& out) {
  const json* list = member(status, key);
  if (list == nullptr || !list->is_array()) return;
  for (const json& item : *list) {
    if (!item.is_object()) continue;
    ContainerStatus c;
    c.name = string_at(item, "name");
    const std::string id = string_at(item, "containerID");
    if (const size_t sep = id.find("://"); sep != std::string::npos) {
      c.runtime = id.substr(0, sep);
      c.container_id = id.substr(sep + 3);
    } else {
      c.container_id = id;
    }
    if (const json* ready = member(item, "ready"); ready != nullptr && ready->is_boolean()) {
      c.ready = ready->get<bool>();
    }
    if (const json* restarts = member(item, "restartCount");
        restarts != nullptr && restarts->is_number_integer()) {
      c.restart_count = restarts->get<int64_t>();
    }
    const json& state = object_at(item, "state");
    c.started_at = time_at(object_at(state, "running"), "startedAt");
    if (!c.started_at) c.started_at = time_at(object_at(state, "terminated"), "startedAt");
    out.push_back(std::move(c));
  }
}

// The message of a Status body, else the start of the body.
std::string status_message(unsigned status, const std::string& body) {
  std::string text = "HTTP " + std::to_string(status);
  const json doc = json::parse(body, nullptr, false);
  std::string message = doc.is_discarded() ? std::string() : string_at(doc, "message");
  if (message.empty() && !doc.is_object()) message = body.substr(0, 200);
  if (!message.empty()) text += ": " + message;
  return text;
}

}  // namespace

std::optional<WallTime> parse_kube_time(std::string_view text) {
  // 2024-03-01T10:20:30[.fraction](Z|+hh:mm|-hh:mm)
  int year = 0;
  unsigned month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' ||
      (text[10] != 'T' && text[10] != 't') || text[13] != ':' || text[16] != ':') {
    return std::nullopt;
  }
  if (!digits(text, 0, 4, year) || !digits(text, 5, 2, month) || !digits(text, 8, 2, day) ||
      !digits(text, 11, 2, hour) || !digits(text, 14, 2, minute) || !digits(text, 17, 2, second)) {
    return std::nullopt;
  }
  const std::chrono::year_month_day date{std::chrono::year(year), std::chrono::month(month),
                                         std::chrono::day(day)};
  if (!date.ok() || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  size_t pos = 19;
  std::chrono::nanoseconds fraction{0};
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int64_t scale = 100'000'000;
    const size_t start = pos;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      fraction += std::chrono::nanoseconds((text[pos] - '0') * scale);
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  std::chrono::minutes offset{0};
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    unsigned oh = 0, om = 0;
    if (pos + 6 != text.size() || text[pos + 3] != ':' || !digits(text, pos + 1, 2, oh) ||
        !digits(text, pos + 4, 2, om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset = std::chrono::hours(oh) + std::chrono::minutes(om);
    if (text[pos] == '-') offset = -offset;
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;
  const auto t = std::chrono::sys_days(date) + std::chrono::hours(hour) +
                 std::chrono::minutes(minute) + std::chrono::seconds(second) - offset;
  return std::chrono::time_point_cast<WallTime::duration>(t + fraction);
}

std::string url_encode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

using PodResult = boost::system::result<Pod, std::string>;

// Pod is constructible from a string (its first member), so errors are made explicitly.
PodResult pod_error(std::string message) {
  return PodResult(boost::system::in_place_error, std::move(message));
}

PodResult parse_pod(const json& object) {
  try {
    if (!object.is_object()) return pod_error("a pod is not a JSON object");
    const json& metadata = object_at(object, "metadata");
    Pod pod;
    pod.uid = string_at(metadata, "uid");
    pod.name = string_at(metadata, "name");
    if (pod.uid.empty()) {
      return pod_error("pod \"" + pod.name + "\" has no metadata.uid");
    }
    pod.namespace_ = string_at(metadata, "namespace");
    pod.resource_version = string_at(metadata, "resourceVersion");
    pod.creation_timestamp = time_at(metadata, "creationTimestamp");
    for (const auto& [key, value] : object_at(metadata, "labels").items()) {
      if (value.is_string()) pod.labels.emplace(key, value.get<std::string>());
    }
    pod.node_name = string_at(object_at(object, "spec"), "nodeName");
    const json& status = object_at(object, "status");
    pod.phase = string_at(status, "phase");
    pod.pod_ip = string_at(status, "podIP");
    pod.start_time = time_at(status, "startTime");
    parse_container_statuses(status, "containerStatuses", pod.containers);
    parse_container_statuses(status, "initContainerStatuses", pod.containers);
    parse_container_statuses(status, "ephemeralContainerStatuses", pod.containers);
    return pod;
  } catch (const std::exception& e) {
    return pod_error(std::string("a pod cannot be read: ") + e.what());
  }
}

struct PodInformer::Impl : std::enable_shared_from_this<PodInformer::Impl> {
  Impl(net::io_context& io, std::shared_ptr<ApiClient> api, PodWatchOptions options, KubeLog log)
      : strand(net::make_strand(io)),
        api(std::move(api)),
        options(std::move(options)),
        log(std::move(log)),
        rng(std::random_device{}()),
        timer(strand) {}

  enum class Next { kList, kWatch };

  // Everything below runs on the strand, except what takes `mu`.
  std::string pods_path() const {
    return options.namespace_.empty()
               ? "/api/v1/pods"
               : "/api/v1/namespaces/" + url_encode(options.namespace_) + "/pods";
  }
  std::string selectors() const {
    std::string query;
    if (!options.label_selector.empty()) {
      query += "&labelSelector=" + url_encode(options.label_selector);
    }
    if (!options.field_selector.empty()) {
      query += "&fieldSelector=" + url_encode(options.field_selector);
    }
    return query;
  }

  template <class F>
  void on_strand(F f) {
    net::post(strand, [self = shared_from_this(), f = std::move(f)]() mutable {
      if (!self->stopped) f();
    });
  }

  void list() {
    end_watch();
    listing.clear();
    continue_token.clear();
    list_page();
  }

  void list_page() {
    const uint64_t gen = ++generation;
    HttpRequest request;
    request.target = pods_path() + "?limit=" + std::to_string(options.page_size) + selectors();
    if (!continue_token.empty()) request.target += "&continue=" + url_encode(continue_token);
    request.timeout = options.list_timeout;
    api->request(std::move(request), [self = shared_from_this(), gen](HttpResult result) {
      self->on_strand([self, gen, result = std::move(result)]() mutable {
        if (gen == self->generation) self->on_list_page(std::move(result));
      });
    });
  }

  void on_list_page(HttpResult result) {
    if (!result) return failed("listing pods: " + result.error(), Next::kList);
    if (result->status == 410 && !continue_token.empty()) {
      // The continue token expired between pages: start over.
      return list();
    }
    if (result->status != 200) {
      return failed("listing pods: " + status_message(result->status, result->body), Next::kList);
    }
    const json doc = json::parse(result->body, nullptr, false);
    const json* items = doc.is_discarded() ? nullptr : member(doc, "items");
    if (items == nullptr || !(items->is_array() || items->is_null())) {
      return failed("listing pods: the answer is not a pod list", Next::kList);
    }
    if (items->is_array()) {
      for (const json& item : *items) {
        auto pod = parse_pod(item);
        if (pod) {
          std::string uid = pod->uid;
          listing.insert_or_assign(std::move(uid), std::move(*pod));
        }
      }
    }
    const json& metadata = object_at(doc, "metadata");
    continue_token = string_at(metadata, "continue");
    if (!continue_token.empty()) return list_page();

    resource_version = string_at(metadata, "resourceVersion");
    pods = std::move(listing);
    listing.clear();
    update([](Status& s) {
      ++s.lists;
      s.synced = true;
    });
    succeeded();
    if (!announced_sync) {
      announced_sync = true;
      say("listed " + std::to_string(pods.size()) + " pods from " + api->config().description +
          "; watching from resourceVersion " + resource_version);
    }
    publish();
    watch();
  }

  void watch() {
    end_watch();
    const uint64_t gen = ++generation;
    const auto min = options.watch_timeout_min.count();
    const auto max = std::max(options.watch_timeout_max.count(), min);
    const auto seconds = std::uniform_int_distribution<int64_t>(min, max)(rng);
    HttpRequest request;
    request.target = pods_path() + "?watch=true&allowWatchBookmarks=true&resourceVersion=" +
                     url_encode(resource_version) + "&timeoutSeconds=" + std::to_string(seconds) +
                     selectors();
    request.timeout = std::chrono::seconds(seconds) + options.watch_silence_grace;
    watch_status = 0;
    watch_body.clear();
    watch_events = 0;
    watch_started = SteadyClock::now();
    auto self = shared_from_this();
    StreamCallbacks callbacks;
    callbacks.on_head = [self, gen](unsigned status, const boost::beast::http::fields&) {
      self->on_strand([self, gen, status] {
        if (gen == self->generation) self->on_watch_head(status);
      });
    };
    callbacks.on_line = [self, gen](std::string_view line) {
      self->on_strand([self, gen, line = std::string(line)] {
        if (gen == self->generation) self->on_watch_line(line);
      });
    };
    callbacks.on_done = [self, gen](const std::string& error) {
      self->on_strand([self, gen, error] {
        if (gen == self->generation) self->on_watch_done(error);
      });
    };
    stream = api->stream(std::move(request), std::move(callbacks));
  }

  void on_watch_head(unsigned status) {
    watch_status = status;
    if (status == 410) {
      update([](Status& s) { ++s.relists_gone; });
      return list();
    }
    if (status == 200) {
      update([](Status& s) { ++s.watches; });
      succeeded();
    }
  }

  void on_watch_line(const std::string& line) {
    if (watch_status != 200) {
      if (watch_body.size() < 4096) watch_body += line;
      return;
    }
    if (line.empty()) return;
    const json event = json::parse(line, nullptr, false);
    const std::string type = event.is_discarded() ? std::string() : string_at(event, "type");
    const json& object = object_at(event, "object");
    if (type == "ADDED" || type == "MODIFIED" || type == "DELETED") {
      auto pod = parse_pod(object);
      if (!pod) return failed("watching pods: " + pod.error(), Next::kWatch);
      if (!pod->resource_version.empty()) resource_version = pod->resource_version;
      if (type == "DELETED") {
        pods.erase(pod->uid);
      } else {
        std::string uid = pod->uid;
        pods.insert_or_assign(std::move(uid), std::move(*pod));
      }
      ++watch_events;
      update([](Status& s) { ++s.events; });
      publish();
    } else if (type == "BOOKMARK") {
      const std::string version = string_at(object_at(object, "metadata"), "resourceVersion");
      if (!version.empty()) resource_version = version;
      ++watch_events;
      update([&](Status& s) {
        ++s.events;
        s.resource_version = resource_version;
      });
    } else if (type == "ERROR") {
      const json* code = member(object, "code");
      if (code != nullptr && code->is_number_integer() && code->get<int64_t>() == 410) {
        update([](Status& s) { ++s.relists_gone; });
        return list();
      }
      const std::string message = string_at(object, "message");
      failed("watching pods: the server ended the watch: " +
                 (message.empty() ? line.substr(0, 200) : message),
             Next::kWatch);
    } else {
      failed("watching pods: a line that is not a watch event: " + line.substr(0, 200),
             Next::kWatch);
    }
  }

  void on_watch_done(const std::string& error) {
    stream.reset();
    // A watch that ran for a while and then lost its connection (an API server restart, a
    // load balancer's idle timeout) is resumed at once; only failing again is an error.
    const bool lived = watch_events > 0 || SteadyClock::now() - watch_started >= kShortWatch;
    if (!error.empty() && watch_status == 200 && lived) return watch();
    if (!error.empty()) return failed("watching pods: " + error, Next::kWatch);
    if (watch_status != 200) {
      return failed("watching pods: " + status_message(watch_status, watch_body), Next::kWatch);
    }
    // The server ended the watch (its timeoutSeconds). One that ends at once without events
    // is a server in trouble: wait before the next.
    if (!lived) return retry_later(Next::kWatch);
    watch();
  }

  void end_watch() {
    ++generation;
    if (stream) {
      stream->cancel();
      stream.reset();
    }
  }

  void failed(const std::string& message, Next next) {
    update([&](Status& s) {
      ++s.errors;
      s.healthy = false;
      s.last_error = message;
    });
    if (!announced_trouble) {
      announced_trouble = true;
      say(message + "; retrying with backoff, keeping " + std::to_string(pods.size()) +
          " known pods");
    }
    retry_later(next);
  }

  void retry_later(Next next) {
    end_watch();
    const auto base = std::min<int64_t>(options.backoff_max.count(),
                                        options.backoff_min.count() << std::min(failures, 20u));
    ++failures;
    // Jitter: between half and all of the exponential delay, so agents spread their retries.
    const auto delay = std::uniform_int_distribution<int64_t>(base / 2, base)(rng);
    const uint64_t gen = generation;
    timer.expires_after(std::chrono::milliseconds(delay));
    timer.async_wait(net::bind_executor(
        strand, [self = shared_from_this(), gen, next](boost::system::error_code ec) {
          if (ec || self->stopped || gen != self->generation) return;
          if (next == Next::kList) {
            self->list();
          } else {
            self->watch();
          }
        }));
  }

  void succeeded() {
    failures = 0;
    update([](Status& s) {
      s.healthy = true;
      s.last_success = std::chrono::system_clock::now();
    });
    if (announced_trouble) {
      announced_trouble = false;
      say("the API server answers again; " + std::to_string(pods.size()) + " pods known");
    }
  }

  void publish() {
    auto snapshot = std::make_shared<const PodMap>(pods);
    std::function<void()> callback;
    {
      std::lock_guard lock(mu);
      published = std::move(snapshot);
      status.pods = pods.size();
      status.resource_version = resource_version;
      callback = change_callback;
    }
    if (callback) callback();
  }

  template <class F>
  void update(F f) {
    std::lock_guard lock(mu);
    f(status);
  }

  void say(const std::string& message) const {
    if (log) log(message);
  }

  net::strand<net::io_context::executor_type> strand;
  std::shared_ptr<ApiClient> api;
  const PodWatchOptions options;
  KubeLog log;
  std::mt19937_64 rng;
  net::steady_timer timer;

  // On the strand.
  bool started = false;
  bool stopped = false;
  uint64_t generation = 0;  // callbacks of an earlier list, watch or timer are ignored
  PodMap pods;
  PodMap listing;  // pages of a list in progress
  std::string continue_token;
  std::string resource_version;
  std::shared_ptr<StreamHandle> stream;
  unsigned watch_status = 0;
  std::string watch_body;
  uint64_t watch_events = 0;
  SteadyClock::time_point watch_started;
  unsigned failures = 0;
  bool announced_sync = false;
  bool announced_trouble = false;

  // Read from any thread.
  mutable std::mutex mu;
  std::shared_ptr<const PodMap> published = std::make_shared<const PodMap>();
  Status status;
  std::function<void()> change_callback;
};

PodInformer::PodInformer(net::io_context& io, std::shared_ptr<ApiClient> api,
                         PodWatchOptions options, KubeLog log)
    : impl_(std::make_shared<Impl>(io, std::move(api), std::move(options), std::move(log))) {}

PodInformer::~PodInformer() {
  stop();
}

void PodInformer::start() {
  net::dispatch(impl_->strand, [impl = impl_] {
    if (impl->started || impl->stopped) return;
    impl->started = true;
    impl->list();
  });
}

void PodInformer::stop() {
  net::dispatch(impl_->strand, [impl = impl_] {
    impl->stopped = true;
    impl->timer.cancel();
    impl->end_watch();
  });
}

std::shared_ptr<const PodMap> PodInformer::pods() const {
  std::lock_guard lock(impl_->mu);
  return impl_->published;
}

PodInformer::Status PodInformer::status() const {
  std::lock_guard lock(impl_->mu);
  return impl_->status;
}

void PodInformer::on_change(std::function<void()> callback) {
  std::lock_guard lock(impl_->mu);
  impl_->change_callback = std::move(callback);
}

}  // namespace nodemeter::kube
