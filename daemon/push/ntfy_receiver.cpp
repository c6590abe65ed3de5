#include "push/ntfy_receiver.hpp"

#include <algorithm>
#include <cctype>
#include <sys/epoll.h>

#include <curl/curl.h>

#include "core/log.hpp"
#include "dav/http_client.hpp"
#include "push/ntfy_topic.hpp"

namespace davsyncd::push {

// One streaming GET on a private curl multi handle, driven by the loop:
// curl tells which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to
// call it back (CURLMOPT_TIMERFUNCTION); nothing polls. The receiver learns
// of the end through its `finished_` Defer, so that it never destroys this
// object from inside one of curl's callbacks.
struct NtfyReceiver::Curl {
    NtfyReceiver& owner;
    CURLM* multi = nullptr;
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string url;
    char error[CURL_ERROR_SIZE] = {};
    std::map<curl_socket_t, std::unique_ptr<core::FdWatch>> sockets;
    // Watches curl let go of while one of them was calling back: freed on
    // the next iteration, never inside their own callback.
    std::vector<std::unique_ptr<core::FdWatch>> retired;
    core::Timer timer;
    core::Defer free_retired;
    bool closing = false;
    bool done = false;
    CURLcode result = CURLE_OK;
    long status = 0;

    Curl(NtfyReceiver& o, std::string u)
        : owner(o),
          url(std::move(u)),
          timer(o.loop_, [this] { action(CURL_SOCKET_TIMEOUT, 0); }),
          free_retired(o.loop_, [this] { retired.clear(); }) {
        multi = curl_multi_init();
        easy = curl_easy_init();
        if (!multi || !easy) throw std::runtime_error("curl: cannot create a handle");
        curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &Curl::on_socket);
        curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, this);
        curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &Curl::on_timer);
        curl_multi_setopt(multi, CURLMOPT_TIMERDATA, this);

        headers = curl_slist_append(headers, "Accept: application/x-ndjson");
        curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(easy, CURLOPT_USERAGENT, dav::user_agent().c_str());
        curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);  // the URL is a capability: not elsewhere
        curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(easy, CURLOPT_FAILONERROR, 1L);
        curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 30L);
        curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error);
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Curl::on_write);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, this);
        if (curl_multi_add_handle(multi, easy) != CURLM_OK) throw std::runtime_error("curl: cannot start the stream");
    }

    ~Curl() {
        closing = true;
        timer.cancel();
        // Stop watching before curl closes the sockets (the fd numbers may be
        // reused at once).
        for (auto& [fd, w] : sockets) w->cancel();
        curl_multi_remove_handle(multi, easy);
        curl_easy_cleanup(easy);
        curl_multi_cleanup(multi);
        curl_slist_free_all(headers);
    }

    void action(curl_socket_t fd, int mask) {
        int running = 0;
        curl_multi_socket_action(multi, fd, mask, &running);
        int left = 0;
        while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
            if (m->msg != CURLMSG_DONE || done) continue;
            done = true;
            result = m->data.result;
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
            owner.finished_.schedule();
        }
    }

    static int on_socket(CURL*, curl_socket_t fd, int what, void* userp, void*) {
        auto* self = static_cast<Curl*>(userp);
        if (self->closing) return 0;
        auto it = self->sockets.find(fd);
        if (what == CURL_POLL_REMOVE) {
            if (it != self->sockets.end()) {
                it->second->cancel();
                self->retired.push_back(std::move(it->second));
                self->sockets.erase(it);
                self->free_retired.schedule();
            }
            return 0;
        }
        std::uint32_t events = 0;
        if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= EPOLLIN;
        if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= EPOLLOUT;
        if (it == self->sockets.end()) {
            auto w = std::make_unique<core::FdWatch>(self->owner.loop_, [self, fd](std::uint32_t ev) {
                int mask = 0;
                if (ev & EPOLLIN) mask |= CURL_CSELECT_IN;
                if (ev & EPOLLOUT) mask |= CURL_CSELECT_OUT;
                if (ev & (EPOLLERR | EPOLLHUP)) mask |= CURL_CSELECT_ERR;
                self->action(fd, mask);
            });
            w->watch(fd, events);
            self->sockets.emplace(fd, std::move(w));
        } else {
            it->second->modify(events);
        }
        return 0;
    }

    static int on_timer(CURLM*, long timeout_ms, void* userp) {
        auto* self = static_cast<Curl*>(userp);
        if (self->closing) return 0;
        if (timeout_ms < 0) self->timer.cancel();
        else self->timer.schedule_in(std::chrono::milliseconds(timeout_ms));  // 0: next iteration, not here
        return 0;
    }

    static size_t on_write(char* data, size_t size, size_t n, void* userp) {
        auto* self = static_cast<Curl*>(userp);
        if (self->closing) return 0;
        self->owner.on_bytes(data, size * n);
        return size * n;
    }
};

NtfyReceiver::NtfyReceiver(core::EventLoop& loop, std::string origin, Handlers handlers, Options options)
    : loop_(loop),
      origin_(std::move(origin)),
      handlers_(std::move(handlers)),
      options_(options),
      retry_(loop, [this] { start(); }),
      watchdog_(loop, [this] { check_idle(); }),
      restart_(loop, [this] {
          stop_transfer();
          retry_.cancel();
          start();
      }),
      finished_(loop, [this] {
          if (!curl_ || !curl_->done) return;
          std::string why;
          if (curl_->result == CURLE_OK) {
              why = "the server ended the stream";
          } else if (curl_->result == CURLE_HTTP_RETURNED_ERROR) {
              why = cat("the server answered ", curl_->status);
          } else {
              why = curl_->error[0] ? std::string(curl_->error) : std::string(curl_easy_strerror(curl_->result));
          }
          on_finished(why, curl_->result == CURLE_OK);
      }) {}

NtfyReceiver::~NtfyReceiver() {
    *alive_ = false;
    curl_.reset();
}

void NtfyReceiver::add(const Registration& r) {
    // Answers go out on a later iteration, as a distributor's would: the
    // caller may be the account's constructor or in the middle of a step.
    auto later = [this, alive = std::weak_ptr<bool>(alive_)](std::function<void()> fn) {
        loop_.post([alive, fn = std::move(fn)] {
            if (alive.lock()) fn();
        });
    };
    std::string topic;
    try {
        topic = load_or_create_ntfy_topic(r.state_dir, origin_);
    } catch (const std::exception& e) {
        later([this, token = r.token, why = cat("cannot keep a topic for ", origin_, ": ", e.what())] {
            handlers_.lost(token, why);
        });
        return;
    }
    auto [it, fresh] = tokens_.try_emplace(r.token, Entry{topic, false});
    if (!fresh && it->second.topic == topic && curl_ && open_) {
        // Asked again (a new VAPID key): the endpoint stays; say it again.
        later([this, token = r.token] {
            if (auto it = tokens_.find(token); it != tokens_.end())
                handlers_.new_endpoint(token, cat(origin_, "/", it->second.topic, "?up=1"));
        });
        return;
    }
    it->second = Entry{topic, false};
    restart_soon();
}

void NtfyReceiver::remove(const std::string& token) {
    if (tokens_.erase(token)) restart_soon();
}

void NtfyReceiver::reconnect() {
    if (tokens_.empty()) return;
    log::info("push: reconnecting to ", origin_);
    stop_transfer();
    retry_.cancel();
    failures_ = 0;
    start();
}

void NtfyReceiver::restart_soon() { restart_.schedule(); }

std::string NtfyReceiver::stream_url() const {
    std::vector<std::string> topics;
    for (const auto& [token, e] : tokens_) topics.push_back(e.topic);
    std::sort(topics.begin(), topics.end());
    topics.erase(std::unique(topics.begin(), topics.end()), topics.end());
    std::string url = origin_ + "/";
    for (std::size_t i = 0; i < topics.size(); ++i) url += (i ? "," : "") + topics[i];
    url += "/json";
    // Resume: what was published while no stream was open is in the
    // server's cache. Message ids are short tokens of letters and digits;
    // anything else is not put into a URL.
    bool id_ok = !last_id_.empty() && last_id_.size() <= 64 &&
                 std::all_of(last_id_.begin(), last_id_.end(), [](unsigned char c) { return std::isalnum(c); });
    if (id_ok) url += "?since=" + last_id_;
    else if (open_time_ > 0) url += cat("?since=", open_time_);
    return url;
}

void NtfyReceiver::start() {
    if (tokens_.empty()) {
        if (up_) set_up(false, "");
        return;
    }
    stop_transfer();
    try {
        curl_ = std::make_unique<Curl>(*this, stream_url());
    } catch (const std::exception& e) {
        curl_.reset();
        retry_later(e.what());
        return;
    }
    ++connections_;
    bad_lines_ = 0;
    started_ = loop_.now();
    last_byte_ = started_;
    watchdog_.schedule_in(options_.idle_timeout);
    log::debug("push: opening the stream of ", tokens_.size(), " topic(s) on ", origin_);
}

void NtfyReceiver::stop_transfer() {
    curl_.reset();
    finished_.cancel();
    watchdog_.cancel();
    parser_.reset();
    open_ = false;
}

void NtfyReceiver::on_bytes(const char* data, std::size_t size) {
    last_byte_ = loop_.now();
    auto r = parser_.feed(std::string_view(data, size));
    // A few lines say what is wrong; a server (or captive portal) sending
    // pages of junk must not flood the journal.
    for (const auto& err : r.errors) {
        if (++bad_lines_ <= 3) log::warning("push: ignoring a line of the stream from ", origin_, ": ", err);
        if (bad_lines_ == 3) log::warning("push: further bad lines on this stream from ", origin_, " are not logged");
    }
    std::weak_ptr<bool> alive = alive_;
    for (const auto& e : r.events) {
        on_event(e);
        if (!alive.lock()) return;
    }
}

void NtfyReceiver::on_event(const NtfyEvent& e) {
    switch (e.kind) {
    case NtfyEvent::Kind::open:
        open_ = true;
        if (e.time > 0) open_time_ = e.time;
        log::info("push: stream open on ", origin_, " (", tokens_.size(), " topic(s))");
        if (!up_) set_up(true, "");
        for (auto& [token, entry] : tokens_) {
            if (entry.announced) continue;
            entry.announced = true;
            handlers_.new_endpoint(token, cat(origin_, "/", entry.topic, "?up=1"));
        }
        break;
    case NtfyEvent::Kind::message: {
        if (!e.id.empty()) last_id_ = e.id;
        for (const auto& [token, entry] : tokens_) {
            if (entry.topic != e.topic) continue;
            handlers_.message(token, e.body);
            return;
        }
        log::debug("push: a message on ", origin_, " for a topic no account uses now");
        break;
    }
    case NtfyEvent::Kind::keepalive:
    case NtfyEvent::Kind::other:
        break;
    }
}

void NtfyReceiver::on_finished(const std::string& why, bool) {
    const bool had_opened = open_;
    const bool lived = loop_.now() - started_ >= std::chrono::seconds(30);
    stop_transfer();
    if (had_opened && lived) failures_ = 0;
    retry_later(why);
}

// The first two retries keep the transport "up": a stream that comes back
// within seconds resumes with since= and nothing was missed. A third
// failure in a row tells the accounts (they poll until the stream is back,
// and sync once when it is).
void NtfyReceiver::retry_later(const std::string& why) {
    ++failures_;
    auto base = options_.backoff_min * (1LL << std::min(failures_ - 1, 20u));
    base = std::min<std::chrono::milliseconds>(base, options_.backoff_max);
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    auto delay = std::chrono::milliseconds(static_cast<long long>(static_cast<double>(base.count()) * jitter(random_)));
    log::warning("push: stream on ", origin_, " lost (", why, "); reconnecting in ",
                 cat(delay.count() / 1000, ".", (delay.count() % 1000) / 100), " s");
    if (failures_ >= 3 && up_) set_up(false, cat("the stream on ", origin_, " is down: ", why));
    retry_.schedule_in(delay);
}

void NtfyReceiver::set_up(bool up, const std::string& why) {
    up_ = up;
    std::weak_ptr<bool> alive = alive_;
    if (!up) {
        for (auto& [token, entry] : tokens_) entry.announced = false;
        // Copy: a handler may add or remove tokens (deferred, but be safe).
        std::vector<std::string> tokens;
        for (const auto& [token, entry] : tokens_) tokens.push_back(token);
        for (const auto& t : tokens) {
            handlers_.lost(t, why);
            if (!alive.lock()) return;
        }
    }
    if (handlers_.distributor_changed) handlers_.distributor_changed(transport());
}

void NtfyReceiver::check_idle() {
    if (!curl_) return;
    auto idle = loop_.now() - last_byte_;
    if (idle < options_.idle_timeout) {
        watchdog_.schedule_at(last_byte_ + options_.idle_timeout);
        return;
    }
    stop_transfer();
    retry_later(cat("nothing received for ", std::chrono::duration_cast<std::chrono::seconds>(idle).count(), " s"));
}

}  // namespace davsyncd::push
