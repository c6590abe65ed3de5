// A canned-response HTTP/1.1 server on a loopback port, for unit tests of
// the HTTP layer and the sync engine. It serves queued responses in order,
// records every request it receives, and keeps connections alive. A canned
// response can also stall before answering or trickle its body, to test a
// client against a slow or hostile server.
// Runs one thread; the recorded requests are read after the client returns.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace testing {

// What the error thrown by `f` says, whatever its type; "(no error)" when
// none was thrown.
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no error)";
}

// A loopback port nobody listens on: bound by the kernel's choice, then
// closed, so a connection to it is refused (where port 1 is only assumed
// closed). Another process could take it in between, which a refused
// connect in the next few milliseconds makes unlikely enough for a test.
inline int closed_loopback_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket() failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        ::close(fd);
        throw std::runtime_error("bind() failed");
    }
    ::close(fd);
    return ntohs(a.sin_port);
}


struct RecordedRequest {
    std::string method, target, head, body;  // head: request line and headers
    std::string header(const std::string& name) const {
        std::string lname;
        for (char c : name) lname += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        size_t pos = 0;
        while ((pos = head.find("\r\n", pos)) != std::string::npos) {
            pos += 2;
            auto end = head.find("\r\n", pos);
            auto line = head.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
            auto colon = line.find(':');
            if (colon == std::string::npos) continue;
            std::string key;
            for (char c : line.substr(0, colon)) key += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (key == lname) {
                auto v = line.substr(colon + 1);
                while (!v.empty() && v.front() == ' ') v.erase(0, 1);
                return v;
            }
        }
        return {};
    }
    bool has_header(const std::string& name) const { return head.find("\r\n" + name + ":") != std::string::npos; }
};

struct CannedResponse {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    // Silence before the status line. A stall or a trickle ends early when
    // the client hangs up or the server is destroyed.
    std::chrono::milliseconds stall{0};
    // When set: the headers at once, then the body one byte per interval.
    std::chrono::milliseconds trickle{0};
};

class FakeHttpServer {
public:
    // Given a request, returns the response; default: the next queued one (or 500).
    using Handler = std::function<CannedResponse(const RecordedRequest&)>;

    FakeHttpServer() {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        socklen_t len = sizeof a;
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        ::listen(listen_fd_, 16);
        thread_ = std::thread([this] { run(); });
    }
    ~FakeHttpServer() {
        stop_ = true;
        ::shutdown(listen_fd_, SHUT_RDWR);
        ::close(listen_fd_);
        thread_.join();
    }

    std::string url(const std::string& path = "/") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
    void queue(CannedResponse r) { std::lock_guard l(mu_); queue_.push_back(std::move(r)); }
    void set_handler(Handler h) { std::lock_guard l(mu_); handler_ = std::move(h); }
    std::vector<RecordedRequest> requests() const { std::lock_guard l(mu_); return requests_; }
    int connections() const { return connections_; }
    // Connections the client closed while a response was stalled or trickling.
    int hangups() const { return hangups_; }

private:
    void run() {
        while (!stop_) {
            int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) return;
            ++connections_;
            serve(c);
            ::close(c);
        }
    }

    // Serves one connection until the client closes it.
    void serve(int fd) {
        std::string buf;
        char tmp[65536];
        for (;;) {
            size_t head_end;
            while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
                ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
                if (n <= 0) return;
                buf.append(tmp, static_cast<size_t>(n));
            }
            RecordedRequest req;
            req.head = buf.substr(0, head_end);
            auto sp1 = req.head.find(' ');
            auto sp2 = req.head.find(' ', sp1 + 1);
            req.method = req.head.substr(0, sp1);
            req.target = req.head.substr(sp1 + 1, sp2 - sp1 - 1);
            size_t body_len = 0;
            if (auto cl = req.header("content-length"); !cl.empty()) body_len = std::stoul(cl);
            buf.erase(0, head_end + 4);
            while (buf.size() < body_len) {
                ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
                if (n <= 0) return;
                buf.append(tmp, static_cast<size_t>(n));
            }
            req.body = buf.substr(0, body_len);
            buf.erase(0, body_len);

            CannedResponse resp;
            {
                std::lock_guard l(mu_);
                requests_.push_back(req);
                if (handler_) resp = handler_(req);
                else if (!queue_.empty()) { resp = std::move(queue_.front()); queue_.pop_front(); }
                else resp = CannedResponse{500, {}, "no canned response left"};
            }
            if (resp.stall.count() > 0 && !wait_unless_hung_up(fd, resp.stall)) return;
            std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " X\r\n";
            for (auto& [k, v] : resp.headers) out += k + ": " + v + "\r\n";
            out += "Content-Length: " + std::to_string(resp.body.size()) + "\r\n\r\n";
            std::string body = req.method != "HEAD" ? resp.body : std::string();
            if (resp.trickle.count() == 0) out += body;
            if (::send(fd, out.data(), out.size(), MSG_NOSIGNAL) < 0) return;
            if (resp.trickle.count() > 0) {
                for (char c : body) {
                    if (!wait_unless_hung_up(fd, resp.trickle)) return;
                    if (::send(fd, &c, 1, MSG_NOSIGNAL) < 0) return;
                }
            }
        }
    }

    // Waits `how_long`; false when the client closed the connection or the
    // server is stopping first.
    bool wait_unless_hung_up(int fd, std::chrono::milliseconds how_long) {
        auto deadline = std::chrono::steady_clock::now() + how_long;
        for (;;) {
            if (stop_) return false;
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return true;
            // Short slices, so that the destructor is never kept waiting long.
            pollfd p{fd, POLLIN | POLLRDHUP, 0};
            int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 50)));
            if (n > 0) {
                char b;
                if (p.revents & (POLLRDHUP | POLLHUP | POLLERR) || ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
                    ++hangups_;
                    return false;
                }
                // The client sent more (a pipelined request): it is read later.
                return wait_rest(deadline);
            }
        }
    }

    bool wait_rest(std::chrono::steady_clock::time_point deadline) {
        while (!stop_ && std::chrono::steady_clock::now() < deadline)
            ::poll(nullptr, 0, 50);
        return !stop_;
    }

    int listen_fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> connections_{0};
    std::atomic<int> hangups_{0};
    mutable std::mutex mu_;
    std::deque<CannedResponse> queue_;
    Handler handler_;
    std::vector<RecordedRequest> requests_;
    std::thread thread_;
};

// A gzip member (RFC 1952) holding `unit` repeated up to `total` bytes.
// The deflate stream (RFC 1951, one block of fixed Huffman codes) writes
// `unit` once, then back-references of 258 bytes at 13 bits each: about
// 200 times smaller than the data, so a few megabytes on the wire inflate
// to a gigabyte. Serve it with "Content-Encoding: gzip".
inline std::string gzip_repeated(const std::string& unit, size_t total) {
    if (unit.empty() || unit.size() > 32768 || total < unit.size()) throw std::invalid_argument("gzip_repeated");
    std::string out = std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", 10);
    uint32_t bits = 0;
    int nbits = 0;
    auto put = [&](uint32_t value, int n) {  // n bits, least significant first
        for (int i = 0; i < n; ++i) {
            bits |= ((value >> i) & 1u) << nbits;
            if (++nbits == 8) {
                out += static_cast<char>(bits);
                bits = 0;
                nbits = 0;
            }
        }
    };
    auto code = [&](uint32_t c, int n) {  // Huffman codes go most significant bit first
        for (int i = n - 1; i >= 0; --i) put((c >> i) & 1u, 1);
    };
    auto literal = [&](unsigned char b) {
        if (b < 144) code(0x30 + b, 8);
        else code(0x190 + (b - 144), 9);
    };
    put(1, 1);  // last block
    put(1, 2);  // fixed Huffman codes
    for (char c : unit) literal(static_cast<unsigned char>(c));
    // Distance code and extra bits for a back-reference of one `unit`.
    static constexpr uint32_t kBase[] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                         33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                         1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    uint32_t distance = static_cast<uint32_t>(unit.size());
    int dcode = 29;
    while (kBase[dcode] > distance) --dcode;
    int dextra = dcode < 4 ? 0 : dcode / 2 - 1;
    size_t left = total - unit.size();
    for (; left > 260; left -= 258) {
        code(0xC5, 8);  // length 258: symbol 285, no extra bits
        code(static_cast<uint32_t>(dcode), 5);
        put(distance - kBase[dcode], dextra);
    }
    for (size_t at = total - left; at < total; ++at) literal(static_cast<unsigned char>(unit[at % unit.size()]));
    code(0, 7);  // end of block
    if (nbits) out += static_cast<char>(bits);

    uint32_t table[256];
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t at = 0; at < total; ++at)
        crc = table[(crc ^ static_cast<unsigned char>(unit[at % unit.size()])) & 0xFF] ^ (crc >> 8);
    crc ^= 0xFFFFFFFFu;
    for (uint32_t v : {crc, static_cast<uint32_t>(total)})
        for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
    return out;
}

}  // namespace testing
