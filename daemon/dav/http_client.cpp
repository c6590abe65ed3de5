#include "dav/http_client.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <limits>
#include <vector>

#include <curl/curl.h>
#include <openssl/crypto.h>

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

namespace {

bool is_redirect(long status) {
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// A 401 that offers Digest and not Basic.
bool digest_only(const Response& r) {
    auto challenge = lower(r.header("www-authenticate").value_or(""));
    return challenge.starts_with("digest") && challenge.find("basic") == std::string::npos;
}

std::string join_chain(const std::vector<std::string>& chain) {
    std::string out;
    for (const auto& u : chain) out += cat(out.empty() ? "" : " -> ", url::redact(u));
    return out;
}

}  // namespace

struct HttpClient::Curl {
    enum class Over { none, wire, decoded, streamed, auth_loop };

    CURL* handle = nullptr;
    char error[CURL_ERROR_SIZE] = {};
    Response* current = nullptr;     // response being filled by the callbacks
    size_t max_bytes = 0;            // decompressed
    size_t max_wire = 0;             // as received
    Over over = Over::none;          // why the callbacks stopped the transfer
    int final_answers = 0;           // non-1xx status lines within one exchange
    bool use_digest = false;         // learnt from a 401 that offers only Digest
    const std::atomic<bool>* cancel = nullptr;
    const HttpClient::BodySink* sink = nullptr;   // for 2xx bodies, when streaming
    uint64_t max_streamed = 0;
    uint64_t streamed = 0;                        // bytes handed to the sink
    std::exception_ptr sink_error;                // what the sink threw

    Curl() : handle(curl_easy_init()) {
        if (!handle) throw HttpError("cannot initialise libcurl");
    }
    ~Curl() { curl_easy_cleanup(handle); }

    // Body bytes received so far, before any decoding (libcurl counts them
    // before it inflates).
    bool wire_exceeded() const {
        curl_off_t got = 0;
        return curl_easy_getinfo(handle, CURLINFO_SIZE_DOWNLOAD_T, &got) == CURLE_OK && got > 0 &&
               static_cast<uint64_t>(got) > max_wire;
    }

    static size_t on_body(char* data, size_t size, size_t n, void* self_ptr) {
        auto* self = static_cast<Curl*>(self_ptr);
        size_t bytes = size * n;
        if (self->wire_exceeded()) {
            self->over = Over::wire;
            return 0;  // aborts the transfer with CURLE_WRITE_ERROR
        }
        if (self->sink && self->streaming()) {
            if (self->streamed + bytes > self->max_streamed) {
                self->over = Over::streamed;
                return 0;
            }
            self->streamed += bytes;
            try {
                (*self->sink)(std::string_view(data, bytes));
            } catch (...) {
                self->sink_error = std::current_exception();
                return 0;
            }
            return bytes;
        }
        std::string& body = self->current->body;
        if (body.size() + bytes > self->max_bytes) {
            self->over = Over::decoded;
            return 0;
        }
        if (body.size() + bytes > body.capacity()) {
            // Past 1 MiB the body gets the whole cap at once. An allocation
            // that large is mapped, not committed: only the pages written
            // become resident. Growing by doubling instead copies the body
            // into a buffer twice its size while both exist, so a body
            // near the cap would briefly cost up to three times the cap.
            size_t want = body.size() + bytes;
            body.reserve(want > kSmallBody ? self->max_bytes : std::max(want, 2 * body.capacity()));
        }
        body.append(data, bytes);
        return bytes;
    }
    static constexpr size_t kSmallBody = 1u << 20;

    // The answer being received is a success, whose body the sink takes.
    bool streaming() const {
        long status = 0;
        return curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status >= 200 && status < 300;
    }

    // libcurl calls this at least once a second, data flowing or not, and
    // after every read: also while compressed bytes decode to nothing.
    static int on_progress(void* self_ptr, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t) {
        auto* self = static_cast<Curl*>(self_ptr);
        if (self->cancelled()) return 1;  // aborts with CURLE_ABORTED_BY_CALLBACK
        if (dlnow > 0 && static_cast<uint64_t>(dlnow) > self->max_wire) {
            self->over = Over::wire;
            return 1;
        }
        return 0;
    }
    bool cancelled() const { return cancel && cancel->load(std::memory_order_relaxed); }

    static size_t on_header(char* data, size_t size, size_t n, void* self_ptr) {
        auto* self = static_cast<Curl*>(self_ptr);
        size_t bytes = size * n;
        std::string_view line(data, bytes);
        if (line.starts_with("HTTP/")) {
            // A new status line: a 1xx, or the challenge of a Digest exchange
            // before its answer. Only the last one's headers describe the
            // body. More than two final answers means the server keeps
            // asking for credentials already sent (a Digest "stale" loop
            // that libcurl would repeat until the timeout).
            size_t sp = line.find(' ');
            bool interim = sp != std::string_view::npos && sp + 1 < line.size() && line[sp + 1] == '1';
            if (!interim && ++self->final_answers > 2) {
                self->over = Over::auth_loop;
                return 0;
            }
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

HttpClient::HttpClient(ClientOptions options) : options_(std::move(options)), curl_(std::make_unique<Curl>()) {
    for (const auto& o : options_.allowed_origins) {
        auto origin = url::origin_of(o);
        if (!origin) throw HttpError(cat("not an http(s) origin: ", url::redact(o)));
        origins_.push_back(*origin);
    }
}
// The password must not outlive its client in freed memory (a core dump is
// off, but a later allocation could hand the bytes on).
HttpClient::~HttpClient() { OPENSSL_cleanse(options_.password.data(), options_.password.size()); }

void HttpClient::set_cancel(const std::atomic<bool>* flag) { curl_->cancel = flag; }

void HttpClient::check_origin(const std::string& target, const std::string& asked_for) {
    auto u = url::parse(target);
    if (!u) throw HttpError(cat("not an http(s) URL: ", url::redact(target)));
    std::string origin = u->origin();
    if (origins_.empty()) origins_.push_back(origin);  // pinned by the first request
    if (std::find(origins_.begin(), origins_.end(), origin) != origins_.end()) {
        warn_if_cleartext(*u);
        return;
    }
    std::string allowed;
    for (const auto& o : origins_) allowed += cat(allowed.empty() ? "" : ", ", o);
    std::string reason = cat(origin, " is not the account's origin (", allowed, ")");
    throw OriginRefused(cat(url::redact(target), ": refused: ", reason, "; the credentials are only sent there"),
                        url::redact(asked_for), url::redact(target), reason);
}

void HttpClient::warn_if_cleartext(const url::Url& target) {
    if (warned_cleartext_ || target.scheme != "http" || (options_.username.empty() && options_.password.empty())) return;
    warned_cleartext_ = true;
    log::warning(target.origin(), ": plain http: the password travels in clear text; use https");
}

Response HttpClient::send(Request request) { return send(std::move(request), BodySink()); }

Response HttpClient::send(Request request, const BodySink& sink) {
    const BodySink* to = sink ? &sink : nullptr;
    if (request.changes_state() && write_decorator_) write_decorator_(request);
    const std::string asked_for = request.url;
    check_origin(request.url, asked_for);
    const bool follow = follows_redirects(request.method);
    std::vector<std::string> chain{request.url};
    for (;;) {
        std::string location;
        Response r = perform(request, location, to);
        // A server that only speaks Digest: switch once, for the client's
        // life, and repeat this request. Otherwise a 401 is final.
        if (r.status == 401 && !curl_->use_digest && !options_.username.empty() && digest_only(r)) {
            curl_->use_digest = true;
            r = perform(request, location, to);
        }
        r.effective_url = request.url;
        if (!follow || !is_redirect(r.status) || location.empty()) return r;

        // Followed here, hop by hop, so that nothing (least of all the
        // Authorization header) is sent to an origin before it is checked.
        auto from = url::parse(request.url);
        auto to = url::parse(location);
        std::optional<std::string> why = !from || !to ? std::optional<std::string>("not an http(s) URL")
                                                      : url::redirect_refusal(*from, *to);
        if (why)
            throw OriginRefused(cat(request.method, " ", url::redact(asked_for), ": HTTP ", r.status, " redirect from ",
                                    url::redact(request.url), " to ", url::redact(location), " refused (", *why,
                                    "): the credentials are only sent to the configured origin"),
                                url::redact(request.url), url::redact(location), *why);
        if (static_cast<int>(chain.size()) > options_.max_redirects) {
            chain.push_back(location);
            throw HttpError(cat(request.method, " ", url::redact(asked_for), ": more than ", options_.max_redirects,
                                " redirects (", join_chain(chain), ")"));
        }
        chain.push_back(location);
        request.url = std::move(location);
    }
}

Response HttpClient::perform(const Request& request, std::string& location, const BodySink* sink) {
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
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, options_.verify_tls ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, options_.verify_tls ? 2L : 0L);
    // A Content-Length past the cap is refused before the body is read.
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(sink ? options_.max_streamed_bytes : options_.max_wire_bytes));

    // libcurl never follows a redirect itself (send() does, within the
    // origin), and never sends credentials to a host other than the URL's.
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");  // were it ever turned on: no downgrade

    if (!options_.username.empty() || !options_.password.empty()) {
        curl_easy_setopt(h, CURLOPT_USERNAME, options_.username.c_str());
        curl_easy_setopt(h, CURLOPT_PASSWORD, options_.password.c_str());
        // Basic is sent pre-emptively (no extra round trip per request):
        // safe because send() only lets requests go to the account's origin.
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
    curl_->max_wire = sink ? options_.max_streamed_bytes : options_.max_wire_bytes;
    curl_->sink = sink;
    curl_->max_streamed = options_.max_streamed_bytes;
    curl_->streamed = 0;
    curl_->sink_error = nullptr;
    curl_->over = Curl::Over::none;
    curl_->final_answers = 0;
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
    curl_->sink = nullptr;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);  // `headers` dies here
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, nullptr);
    if (auto e = std::exchange(curl_->sink_error, nullptr)) std::rethrow_exception(e);

    if (rc == CURLE_ABORTED_BY_CALLBACK && curl_->cancelled())
        throw Cancelled(cat(request.method, " ", url::redact(request.url), ": cancelled"));
    if (rc != CURLE_OK) {
        std::string why;
        if (curl_->over == Curl::Over::decoded)
            why = cat("response larger than ", options_.max_response_bytes, " bytes once decompressed; refused");
        else if (curl_->over == Curl::Over::wire || rc == CURLE_FILESIZE_EXCEEDED)
            why = cat("response larger than ", sink ? options_.max_streamed_bytes : options_.max_wire_bytes,
                      " bytes as received; refused");
        else if (curl_->over == Curl::Over::streamed)
            why = cat("response larger than ", options_.max_streamed_bytes, " bytes once decompressed; refused");
        else if (curl_->over == Curl::Over::auth_loop)
            why = "the server asked for the credentials again after they were sent; giving up (authentication loop)";
        else
            why = curl_->error[0] ? std::string(curl_->error) : std::string(curl_easy_strerror(rc));
        // What was read of a refused body is not kept a moment longer.
        std::string().swap(response.body);
        throw HttpError(cat(request.method, " ", url::redact(request.url), ": ", why));
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
    location.clear();
    if (char* next = nullptr; is_redirect(response.status) &&
                              curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &next) == CURLE_OK && next)
        location = next;
    const uint64_t body_bytes = response.body.size() + curl_->streamed;
    bytes_received_ += body_bytes;

    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    log::debug(request.method, " ", url::redact(request.url), " -> ", response.status, " (", body_bytes,
               " bytes, ", ms.count(), " ms)");
    return response;
}

}  // namespace davsyncd::dav
