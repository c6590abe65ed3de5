#include "dav/http_client.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <limits>

#include <curl/curl.h>

#include "core/log.hpp"
#include "davsyncd_version.h"

namespace davsyncd::dav {
namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

// Methods whose redirects may be followed: they are safe to repeat elsewhere.
bool follows_redirects(std::string_view method) {
    return method == "GET" || method == "PROPFIND" || method == "REPORT" || method == "OPTIONS";
}

// Owns a curl_slist.
struct SList {
    curl_slist* list = nullptr;
    ~SList() { curl_slist_free_all(list); }
    void add(const std::string& line) {
        if (auto* l = curl_slist_append(list, line.c_str())) list = l;
        else throw HttpError("out of memory building request headers");
    }
};

}  // namespace

// --- Request ---------------------------------------------------------------

Request Request::propfind(std::string url, std::string depth, std::string body) {
    Request r{"PROPFIND", std::move(url), {{"Depth", std::move(depth)}}, std::move(body), "application/xml; charset=utf-8"};
    return r;
}
Request Request::report(std::string url, std::string depth, std::string body) {
    Request r{"REPORT", std::move(url), {{"Depth", std::move(depth)}}, std::move(body), "application/xml; charset=utf-8"};
    return r;
}
Request Request::get(std::string url) { return Request{"GET", std::move(url), {}, {}, {}}; }
Request Request::put(std::string url, std::string body, std::string content_type) {
    return Request{"PUT", std::move(url), {}, std::move(body), std::move(content_type)};
}
Request Request::del(std::string url) { return Request{"DELETE", std::move(url), {}, {}, {}}; }
Request Request::post(std::string url, std::string body, std::string content_type) {
    return Request{"POST", std::move(url), {}, std::move(body), std::move(content_type)};
}
Request Request::options(std::string url) { return Request{"OPTIONS", std::move(url), {}, {}, {}}; }

Request& Request::header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
    return *this;
}

bool Request::changes_state() const {
    static constexpr std::string_view kWrites[] = {"PUT", "DELETE", "MOVE", "COPY", "PROPPATCH",
                                                   "MKCOL", "MKCALENDAR", "POST"};
    return std::find(std::begin(kWrites), std::end(kWrites), method) != std::end(kWrites);
}

// --- Response --------------------------------------------------------------

std::optional<std::string> Response::header(std::string_view name) const {
    auto want = lower(name);
    for (const auto& [k, v] : headers)
        if (k == want) return v;
    return std::nullopt;
}

std::optional<std::chrono::seconds> Response::retry_after() const {
    return retry_after(static_cast<std::int64_t>(std::time(nullptr)));
}

std::optional<std::chrono::seconds> Response::retry_after(std::int64_t now_unix) const {
    if (status != 429 && status != 503) return std::nullopt;
    auto v = header("retry-after");
    if (!v) return std::nullopt;
    auto s = trim(*v);
    if (s.empty()) return std::nullopt;
    std::int64_t delay = 0;
    if (std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) {
        // Any count past the cap means the cap; 15 digits cannot overflow.
        delay = s.size() > 15 ? std::numeric_limits<std::int64_t>::max() : std::stoll(std::string(s));
    } else {
        // curl_getdate reads the three HTTP-date forms; -1 is its "no date"
        // (a date before 1970 is negative too, and clamps to the minimum).
        time_t when = curl_getdate(std::string(s).c_str(), nullptr);
        if (when == -1) return std::nullopt;
        if (__builtin_sub_overflow(static_cast<std::int64_t>(when), now_unix, &delay))
            delay = when > now_unix ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
    }
    return std::chrono::seconds(std::clamp<std::int64_t>(delay, kMinRetryAfter.count(), kMaxRetryAfter.count()));
}

std::string user_agent() { return cat("davsyncd/", DAVSYNCD_VERSION); }

// --- HttpClient --------------------------------------------------------------

struct HttpClient::Curl {
    CURL* handle = nullptr;
    char error[CURL_ERROR_SIZE] = {};
    Response* current = nullptr;     // response being filled by the callbacks
    size_t max_bytes = 0;
    bool too_large = false;
    bool use_digest = false;         // learnt from a 401 that offers only Digest
    const std::atomic<bool>* cancel = nullptr;

    Curl() : handle(curl_easy_init()) {
        if (!handle) throw HttpError("cannot initialise libcurl");
    }
    ~Curl() { curl_easy_cleanup(handle); }

    static size_t on_body(char* data, size_t size, size_t n, void* self_ptr) {
        auto* self = static_cast<Curl*>(self_ptr);
        size_t bytes = size * n;
        if (self->current->body.size() + bytes > self->max_bytes) {
            self->too_large = true;
            return 0;  // aborts the transfer with CURLE_WRITE_ERROR
        }
        self->current->body.append(data, bytes);
        return bytes;
    }

    // libcurl calls this at least once a second, data flowing or not.
    static int on_progress(void* self_ptr, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
        return static_cast<Curl*>(self_ptr)->cancelled() ? 1 : 0;  // 1 aborts with CURLE_ABORTED_BY_CALLBACK
    }
    bool cancelled() const { return cancel && cancel->load(std::memory_order_relaxed); }

    static size_t on_header(char* data, size_t size, size_t n, void* self_ptr) {
        auto* self = static_cast<Curl*>(self_ptr);
        size_t bytes = size * n;
        std::string_view line(data, bytes);
        if (line.starts_with("HTTP/")) {
            // A new status line: a redirect hop or a 100/401 before the
            // final answer. Only the last hop's headers describe the body.
            self->current->headers.clear();
            self->current->body.clear();
            return bytes;
        }
        auto colon = line.find(':');
        if (colon != std::string_view::npos && colon > 0) {
            self->current->headers.emplace_back(lower(trim(line.substr(0, colon))),
                                                std::string(trim(line.substr(colon + 1))));
        }
        return bytes;
    }
};

HttpClient::HttpClient(ClientOptions options) : options_(std::move(options)), curl_(std::make_unique<Curl>()) {}
HttpClient::~HttpClient() = default;

Response HttpClient::send(Request request) {
    if (request.changes_state() && write_decorator_) write_decorator_(request);
    return perform(request);
}

void HttpClient::set_cancel(const std::atomic<bool>* flag) { curl_->cancel = flag; }

Response HttpClient::perform(const Request& request) {
    if (curl_->cancelled()) throw Cancelled(cat(request.method, " ", url::redact(request.url), ": cancelled before it was sent"));
    CURL* h = curl_->handle;
    // Options are set in full on every request instead of curl_easy_reset(),
    // which would also forget the Digest state; the connection survives either way.
    curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_->error);
    curl_easy_setopt(h, CURLOPT_USERAGENT, user_agent().c_str());
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");  // every encoding curl can decode (gzip, deflate, ...)
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, static_cast<long>(options_.connect_timeout.count()));
    curl_easy_setopt(h, CURLOPT_TIMEOUT, static_cast<long>(options_.timeout.count()));
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, options_.low_speed_limit);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.low_speed_window.count()));
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, options_.verify_tls ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, options_.verify_tls ? 2L : 0L);

    bool follow = follows_redirects(request.method);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    // Keep the method and body across 301/302/303 (WebDAV methods are not POST).
    curl_easy_setopt(h, CURLOPT_POSTREDIR, static_cast<long>(CURL_REDIR_POST_ALL));

    if (!options_.username.empty() || !options_.password.empty()) {
        curl_easy_setopt(h, CURLOPT_USERNAME, options_.username.c_str());
        curl_easy_setopt(h, CURLOPT_PASSWORD, options_.password.c_str());
        // Basic is sent pre-emptively (no extra round trip per request);
        // Digest only after a server asked for it.
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, curl_->use_digest ? CURLAUTH_DIGEST : CURLAUTH_BASIC);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_NONE);
    }

    // Method and body.
    curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
    if (request.method == "GET") {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, nullptr);
    } else if (request.body.empty() && request.method != "PUT" && request.method != "POST") {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    } else {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method == "POST" ? nullptr : request.method.c_str());
    }

    SList headers;
    headers.add("Expect:");  // no 100-continue round trip
    if (!request.content_type.empty()) headers.add("Content-Type: " + request.content_type);
    else if (!request.body.empty()) headers.add("Content-Type: application/octet-stream");
    else headers.add("Content-Type:");
    for (const auto& [k, v] : request.headers) {
        // A header value with CR/LF would inject headers: refuse it.
        if (k.find_first_of("\r\n:") != std::string::npos || v.find_first_of("\r\n") != std::string::npos)
            throw HttpError(cat("refusing header '", k, "' with a line break in it"));
        headers.add(k + ": " + v);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.list);

    Response response;
    curl_->current = &response;
    curl_->max_bytes = options_.max_response_bytes;
    curl_->too_large = false;
    curl_->error[0] = 0;
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Curl::on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, curl_.get());
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &Curl::on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, curl_.get());
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &Curl::on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, curl_.get());
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);

    auto started = std::chrono::steady_clock::now();
    CURLcode rc = curl_easy_perform(h);
    ++requests_sent_;
    curl_->current = nullptr;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);  // `headers` dies here
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, nullptr);

    if (rc == CURLE_ABORTED_BY_CALLBACK && curl_->cancelled())
        throw Cancelled(cat(request.method, " ", url::redact(request.url), ": cancelled"));
    if (rc != CURLE_OK) {
        std::string why = curl_->too_large ? cat("response larger than ", options_.max_response_bytes, " bytes")
                          : curl_->error[0] ? std::string(curl_->error)
                                            : std::string(curl_easy_strerror(rc));
        throw HttpError(cat(request.method, " ", url::redact(request.url), ": ", why));
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
    if (char* eff = nullptr; curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff)
        response.effective_url = eff;
    bytes_received_ += response.body.size();

    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    log::debug(request.method, " ", url::redact(response.effective_url.empty() ? request.url : response.effective_url),
               " -> ", response.status, " (", response.body.size(), " bytes, ", ms.count(), " ms)");

    // A server that only speaks Digest: switch once and repeat this request.
    if (response.status == 401 && !curl_->use_digest && !options_.username.empty()) {
        auto challenge = lower(response.header("www-authenticate").value_or(""));
        if (challenge.starts_with("digest") && challenge.find("basic") == std::string::npos) {
            curl_->use_digest = true;
            return perform(request);
        }
    }
    return response;
}

}  // namespace davsyncd::dav
