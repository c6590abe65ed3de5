// The built-in ntfy receiver's parts: the JSON stream parser, the topic
// file, and the receiver itself on a real event loop against a loopback
// HTTP server that ends each stream after a few lines (so that it must
// resume with since=).
#include <doctest/doctest.h>

#include "temp_dir.hpp"

#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <string>

#include <curl/curl.h>

#include "core/event_loop.hpp"
#include "core/fs.hpp"
#include "fake_http_server.hpp"
#include "push/ntfy_receiver.hpp"
#include "push/ntfy_stream.hpp"
#include "push/ntfy_topic.hpp"

using namespace davsyncd;
using push::NtfyEvent;
namespace stdfs = std::filesystem;

namespace {

using testing::TempDir;

std::string str(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

}  // namespace

TEST_SUITE("ntfy") {

TEST_CASE("base64 as ntfy sends it") {
    CHECK(str(push::base64_decode("aGVsbG8=")) == "hello");
    CHECK(str(push::base64_decode("aGk=")) == "hi");
    CHECK(str(push::base64_decode("")) == "");
    CHECK(push::base64_decode("/+8=") == std::vector<uint8_t>{0xff, 0xef});
    CHECK_THROWS_AS(push::base64_decode("aGVsbG8"), std::invalid_argument);   // unpadded
    CHECK_THROWS_AS(push::base64_decode("aG-s"), std::invalid_argument);      // base64url character
    CHECK_THROWS_AS(push::base64_decode("aGl="), std::invalid_argument);      // non-zero leftover bits
}

TEST_CASE("the three events of the JSON stream") {
    auto open = push::parse_ntfy_line(R"({"id":"SLiKI64DOt","time":1635528757,"event":"open","topic":"a,b"})");
    CHECK(open.kind == NtfyEvent::Kind::open);
    CHECK(open.time == 1635528757);
    CHECK(open.topic == "a,b");
    auto ka = push::parse_ntfy_line(R"({"id":"DGUDShMCsc","time":1635528787,"event":"keepalive","topic":"a"})");
    CHECK(ka.kind == NtfyEvent::Kind::keepalive);
    auto text = push::parse_ntfy_line(R"({"id":"hwQ2YpKdmg","time":1,"event":"message","topic":"a","message":"Disk full"})");
    CHECK(text.kind == NtfyEvent::Kind::message);
    CHECK(text.id == "hwQ2YpKdmg");
    CHECK(str(text.body) == "Disk full");
    auto bin = push::parse_ntfy_line(
        R"({"id":"x1","time":1,"event":"message","topic":"a","message":"/+8=","encoding":"base64"})");
    CHECK(bin.body == std::vector<uint8_t>{0xff, 0xef});
    // Events we do not know are not errors: the stream goes on.
    CHECK(push::parse_ntfy_line(R"({"id":"p","event":"poll_request","topic":"a"})").kind == NtfyEvent::Kind::other);
}

TEST_CASE("malformed lines say what is wrong") {
    auto err = [](const char* line) { return testing::error_of([&] { push::parse_ntfy_line(line); }); };
    CHECK(err("not json") == "not a JSON object");
    CHECK(err(R"({"id":"a"})") == "no \"event\"");
    CHECK(err(R"({"id":"a","event":"message","message":"x"})") == "a message without a \"topic\"");
    CHECK(err(R"({"id":"a","event":"message","topic":"t"})") == "a message without a \"message\" body");
    CHECK(err(R"({"event":"message","topic":"t","message":"x"})") == "a message without an \"id\"");
    CHECK(err(R"({"id":"a","event":"message","topic":"t","message":"x","encoding":"gzip"})") == "unknown \"encoding\" gzip");
    CHECK(err(R"({"id":"a","event":"message","topic":"t","message":"x","attachment":{"url":"u"}})") ==
          "a message with an attachment instead of a body");
}

TEST_CASE("lines split across reads, CRLF, blank lines and over-long lines") {
    push::NtfyStreamParser p;
    auto r = p.feed(R"({"id":"1","event":"open","top)");
    CHECK(r.events.empty());
    r = p.feed("ic\":\"t\"}\r\n\n{\"id\":\"2\",\"event\":\"keepalive\"}\n{\"id\":\"3\"");
    REQUIRE(r.events.size() == 2);
    CHECK(r.events[0].kind == NtfyEvent::Kind::open);
    CHECK(r.events[1].kind == NtfyEvent::Kind::keepalive);
    CHECK(r.errors.empty());
    r = p.feed(",\"event\":\"message\",\"topic\":\"t\",\"message\":\"m\"}\n");
    REQUIRE(r.events.size() == 1);
    CHECK(str(r.events[0].body) == "m");

    // A line beyond the limit is dropped whole, and the next one still parses.
    r = p.feed(std::string(push::NtfyStreamParser::kMaxLine + 10, 'x'));
    CHECK(r.errors.size() == 1);
    r = p.feed(std::string(100, 'x') + "\n{\"id\":\"4\",\"event\":\"keepalive\"}\n");
    CHECK(r.errors.empty());
    REQUIRE(r.events.size() == 1);
    CHECK(r.events[0].id == "4");
    r = p.feed("{broken\n");
    CHECK(r.errors.size() == 1);
}

TEST_CASE("topics: random, well-formed, kept 0600 per service") {
    std::set<std::string> seen;
    for (int i = 0; i < 200; ++i) {
        auto t = push::random_ntfy_topic();
        CHECK(push::valid_ntfy_topic(t));
        seen.insert(t);
    }
    CHECK(seen.size() == 200);
    CHECK_FALSE(push::valid_ntfy_topic("upabc"));
    CHECK_FALSE(push::valid_ntfy_topic("xxAAAAAAAAAAAA"));
    CHECK_FALSE(push::valid_ntfy_topic("upAAAAAAAAAAA/"));

    TempDir dir;
    auto a = push::load_or_create_ntfy_topic(dir.path / "acc", "https://ntfy.example.org");
    auto file = dir.path / "acc" / push::kNtfyTopicFile;
    struct stat st{};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(push::load_or_create_ntfy_topic(dir.path / "acc", "https://ntfy.example.org") == a);
    // Another service: another topic (the old one named a topic there).
    auto b = push::load_or_create_ntfy_topic(dir.path / "acc", "https://other.example");
    CHECK(b != a);
    CHECK(push::load_or_create_ntfy_topic(dir.path / "acc", "https://other.example") == b);
    // A damaged file gets a new topic rather than an error.
    fs::write_atomic(file, "{not json", 0600);
    auto c = push::load_or_create_ntfy_topic(dir.path / "acc", "https://other.example");
    CHECK(push::valid_ntfy_topic(c));
    CHECK(c != b);
}

TEST_CASE("the receiver: one stream for all topics, endpoints after open, messages by topic, resume with since=") {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    testing::FakeHttpServer server;
    TempDir dir;
    std::string origin = server.url("/");
    origin.pop_back();  // "http://127.0.0.1:<port>"

    core::EventLoop loop;
    std::vector<std::pair<std::string, std::string>> endpoints;
    std::vector<std::pair<std::string, std::string>> messages;
    std::vector<std::string> transports;
    push::Transport::Handlers h{
        [&](const std::string& token, const std::string& e) { endpoints.emplace_back(token, e); },
        [&](const std::string& token, const std::vector<uint8_t>& m) { messages.emplace_back(token, str(m)); },
        [&](const std::string&, const std::string&) {},
        [&](const std::string& t) { transports.push_back(t); }};
    push::NtfyReceiver::Options opt;
    opt.backoff_min = std::chrono::milliseconds(10);
    push::NtfyReceiver rx(loop, origin, h, opt);

    rx.add({"tok-a", "a", "", dir.path / "a"});
    rx.add({"tok-b", "b", "", dir.path / "b"});
    auto ta = push::load_or_create_ntfy_topic(dir.path / "a", origin);
    auto tb = push::load_or_create_ntfy_topic(dir.path / "b", origin);

    // Each response is a complete (Content-Length) stream: the server "ends"
    // it, and the receiver must come back with since= the last message id.
    int served = 0;
    server.set_handler([&](const testing::RecordedRequest&) {
        ++served;
        testing::CannedResponse r;
        r.headers = {{"Content-Type", "application/x-ndjson"}};
        if (served == 1) {
            r.body = "{\"id\":\"o1\",\"time\":1700000000,\"event\":\"open\",\"topic\":\"x\"}\n"
                     "{\"id\":\"m1\",\"time\":1700000001,\"event\":\"message\",\"topic\":\"" + tb +
                     "\",\"message\":\"/+8=\",\"encoding\":\"base64\"}\n"
                     "{\"id\":\"m2\",\"time\":1700000002,\"event\":\"message\",\"topic\":\"" + ta +
                     "\",\"message\":\"plain\"}\n";
        } else if (served == 2) {
            r.body = "{\"id\":\"o2\",\"time\":1700000005,\"event\":\"open\",\"topic\":\"x\"}\n";
        } else {
            r.stall = std::chrono::seconds(30);  // a third stream that stays quiet: no third failure
        }
        return r;
    });

    // Run until the second stream has been served (or a deadline).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    core::Timer watcher(loop, [&] {
        if (served >= 2 || std::chrono::steady_clock::now() > deadline) {
            loop.quit();
            return;
        }
        watcher.schedule_in(std::chrono::milliseconds(20));
    });
    watcher.schedule_in(std::chrono::milliseconds(20));
    loop.run();

    auto reqs = server.requests();
    REQUIRE(reqs.size() >= 2);
    // One stream with both topics, in a stable order.
    auto both = ta < tb ? ta + "," + tb : tb + "," + ta;
    CHECK(reqs[0].method == "GET");
    CHECK(reqs[0].target == "/" + both + "/json");
    CHECK(reqs[1].target == "/" + both + "/json?since=m2");
    CHECK(reqs[0].header("User-Agent").rfind("davsyncd/", 0) == 0);

    REQUIRE(endpoints.size() == 2);
    std::set<std::pair<std::string, std::string>> want_endpoints{
        {"tok-a", origin + "/" + ta + "?up=1"}, {"tok-b", origin + "/" + tb + "?up=1"}};
    CHECK(std::set(endpoints.begin(), endpoints.end()) == want_endpoints);
    REQUIRE(messages.size() == 2);
    CHECK(messages[0] == std::pair<std::string, std::string>{"tok-b", "\xff\xef"});
    CHECK(messages[1] == std::pair<std::string, std::string>{"tok-a", "plain"});
    REQUIRE_FALSE(transports.empty());
    CHECK(transports.front() == "ntfy:" + origin);
    CHECK(rx.transport() == "ntfy:" + origin);
}

TEST_CASE("the receiver: a lost stream is retried, and after three failures in a row the accounts hear of it") {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    testing::FakeHttpServer server;
    TempDir dir;
    std::string origin = server.url("/");
    origin.pop_back();
    // One stream that opens and ends, then the server is busy.
    int served = 0;
    server.set_handler([&](const testing::RecordedRequest&) {
        if (++served == 1) return testing::CannedResponse{200, {}, "{\"id\":\"o\",\"time\":5,\"event\":\"open\",\"topic\":\"x\"}\n"};
        return testing::CannedResponse{503, {}, "busy"};
    });

    core::EventLoop loop;
    std::vector<std::string> lost, endpoints;
    push::Transport::Handlers h{
        [&](const std::string&, const std::string& e) { endpoints.push_back(e); },
        [&](const std::string&, const std::vector<uint8_t>&) {},
        [&](const std::string& token, const std::string& why) {
            lost.push_back(token + ": " + why);
            loop.quit();
        },
        [&](const std::string&) {}};
    push::NtfyReceiver::Options opt;
    opt.backoff_min = std::chrono::milliseconds(5);
    push::NtfyReceiver rx(loop, origin, h, opt);
    rx.add({"tok", "t", "", dir.path / "t"});
    core::Timer deadline(loop, [&] { loop.quit(); });
    deadline.schedule_in(std::chrono::seconds(20));
    loop.run();

    REQUIRE(lost.size() == 1);
    CHECK(lost[0].find("tok: the stream on " + origin + " is down: the server answered 503") == 0);
    auto reqs = server.requests();
    REQUIRE(reqs.size() == 3);
    CHECK(reqs[1].target.find("?since=5") != std::string::npos);  // no message yet: the open's time
    CHECK(endpoints.size() == 1);
    CHECK(rx.transport().empty());
    // The topic stays out of what the accounts are told.
    auto topic = push::load_or_create_ntfy_topic(dir.path / "t", origin);
    CHECK(lost[0].find(topic) == std::string::npos);
}

}  // TEST_SUITE
