// The UnifiedPush connector against fake distributors on a dbus-daemon of
// the test's own: which distributor it registers with, which endpoints it
// takes, whose calls it listens to. Every wait has a deadline and ends on a
// condition; one thread drives every connection, as the daemon's loop does.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "capture.hpp"
#include "push/connector.hpp"

using namespace davsyncd;

namespace {

using Dict = std::map<std::string, sdbus::Variant>;
using Clock = std::chrono::steady_clock;

// A dbus-daemon with the session configuration on a socket of its own,
// stopped when the test ends.
class PrivateBus {
public:
    PrivateBus() {
        int out[2];
        REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::dup2(out[1], 1);
            ::execl("/usr/bin/dbus-daemon", "dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1",
                    "--address=unix:tmpdir=/tmp", static_cast<char*>(nullptr));
            ::_exit(127);
        }
        ::close(out[1]);
        auto deadline = Clock::now() + std::chrono::seconds(10);
        char c;
        while (Clock::now() < deadline) {
            pollfd p{out[0], POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            if (::read(out[0], &c, 1) != 1 || c == '\n') break;
            address_ += c;
        }
        ::close(out[0]);
        REQUIRE_MESSAGE(!address_.empty(), "dbus-daemon printed no address");
    }
    ~PrivateBus() {
        ::kill(pid_, SIGTERM);
        ::waitpid(pid_, nullptr, 0);
    }
    PrivateBus(const PrivateBus&) = delete;
    PrivateBus& operator=(const PrivateBus&) = delete;
    const std::string& address() const { return address_; }

private:
    pid_t pid_ = -1;
    std::string address_;
};

// A UnifiedPush distributor (Distributor2) that accepts every registration
// and sends the endpoints the test tells it to.
class FakeDistributor {
public:
    FakeDistributor(const std::string& address, const std::string& name)
        : connection_(sdbus::createSessionBusConnectionWithAddress(address)) {
        connection_->requestName(name);
        object_ = sdbus::createObject(*connection_, "/org/unifiedpush/Distributor");
        object_->registerMethod("Register").onInterface("org.unifiedpush.Distributor2").implementedAs([this](const Dict& args) {
            tokens.push_back(args.count("token") ? args.at("token").get<std::string>() : "");
            connector_ = object_->getCurrentlyProcessedMessage()->getSender();
            return Dict{{"success", sdbus::Variant(std::string("REGISTRATION_SUCCEEDED"))}};
        });
        object_->registerMethod("Unregister").onInterface("org.unifiedpush.Distributor2").implementedAs([](const Dict&) {
            return Dict{};
        });
        object_->finishRegistration();
    }

    // NewEndpoint to the connector that registered last; the caller does not wait.
    void send_endpoint(const std::string& token, const std::string& endpoint) {
        REQUIRE(!connector_.empty());
        auto proxy = sdbus::createProxy(*connection_, connector_, push::kConnectorPath);
        proxy->callMethod("NewEndpoint")
            .onInterface("org.unifiedpush.Connector2")
            .withArguments(Dict{{"token", sdbus::Variant(token)}, {"endpoint", sdbus::Variant(endpoint)}})
            .dontExpectReply();
    }

    sdbus::IConnection& connection() { return *connection_; }
    const std::string& connector() const { return connector_; }
    std::vector<std::string> tokens;  // Register calls received

private:
    std::unique_ptr<sdbus::IConnection> connection_;
    std::unique_ptr<sdbus::IObject> object_;
    std::string connector_;
};

// What the connector told the daemon.
struct Heard {
    std::vector<std::string> endpoints;
    std::vector<std::string> lost;
    push::Connector::Handlers handlers() {
        return {[this](const std::string&, const std::string& e) { endpoints.push_back(e); },
                [](const std::string&, const std::vector<uint8_t>&) {},
                [this](const std::string&, const std::string& why) { lost.push_back(why); },
                [](const std::string&) {}};
    }
};

// Processes every connection until `done` holds; false after the deadline.
bool pump(const std::vector<sdbus::IConnection*>& connections, const std::function<bool()>& done,
          std::chrono::seconds deadline = std::chrono::seconds(10)) {
    auto until = Clock::now() + deadline;
    for (;;) {
        for (auto* c : connections)
            while (c->processPendingRequest()) {
            }
        if (done()) return true;
        if (Clock::now() > until) return false;
        std::vector<pollfd> fds;
        for (auto* c : connections) {
            auto pd = c->getEventLoopPollData();
            fds.push_back({pd.fd, pd.events, 0});
        }
        ::poll(fds.data(), fds.size(), 20);
    }
}

}  // namespace

TEST_SUITE("push") {

TEST_CASE("a configured distributor that is not running is waited for, never replaced by another") {
    PrivateBus bus;
    FakeDistributor other(bus.address(), "org.unifiedpush.Distributor.other");
    auto conn = sdbus::createSessionBusConnectionWithAddress(bus.address());
    Heard heard;
    testing::StderrCapture log;
    push::Connector connector(*conn, "io.github.davsyncd.test", "wanted", heard.handlers());
    connector.add({"token-1", "davsyncd: test", "", {}});
    // The connector has looked at the bus once it says what it made of the missing one.
    REQUIRE(pump({conn.get(), &other.connection()},
                 [&] { return log.text().find("org.unifiedpush.Distributor.wanted") != std::string::npos; }));
    CHECK(connector.distributor().empty());

    FakeDistributor wanted(bus.address(), "org.unifiedpush.Distributor.wanted");
    CHECK(pump({conn.get(), &other.connection(), &wanted.connection()}, [&] { return !wanted.tokens.empty(); }));
    CHECK(wanted.tokens == std::vector<std::string>{"token-1"});
    CHECK(other.tokens.empty());
    CHECK(connector.distributor() == "org.unifiedpush.Distributor.wanted");
}

TEST_CASE("an endpoint that is not https is refused unless it is on loopback; the log names its origin only") {
    PrivateBus bus;
    FakeDistributor distributor(bus.address(), "org.unifiedpush.Distributor.fake");
    auto conn = sdbus::createSessionBusConnectionWithAddress(bus.address());
    Heard heard;
    testing::StderrCapture log;
    push::Connector connector(*conn, "io.github.davsyncd.test", "", heard.handlers());
    connector.add({"token-1", "davsyncd: test", "", {}});
    std::vector<sdbus::IConnection*> all{conn.get(), &distributor.connection()};
    REQUIRE(pump(all, [&] { return !distributor.tokens.empty(); }));

    distributor.send_endpoint("token-1", "http://push.example/wpush/capability-123?key=abc");
    REQUIRE(pump(all, [&] { return !heard.lost.empty() || !heard.endpoints.empty(); }));
    CHECK(heard.endpoints.empty());
    REQUIRE(heard.lost.size() == 1);
    CHECK(heard.lost[0].find("http://push.example") != std::string::npos);
    std::string text = log.text();
    CAPTURE(text);
    CHECK(text.find("refusing the endpoint") != std::string::npos);
    CHECK(text.find("capability-123") == std::string::npos);
    CHECK(text.find("key=abc") == std::string::npos);

    distributor.send_endpoint("token-1", "http://127.0.0.1:8080/push/abc");
    REQUIRE(pump(all, [&] { return heard.endpoints.size() == 1; }));
    distributor.send_endpoint("token-1", "https://push.example/wpush/abc");
    REQUIRE(pump(all, [&] { return heard.endpoints.size() == 2; }));
    CHECK(heard.endpoints[1] == "https://push.example/wpush/abc");
    CHECK(heard.lost.size() == 1);
}

TEST_CASE("connector calls from anyone but the distributor we registered with are ignored") {
    PrivateBus bus;
    FakeDistributor distributor(bus.address(), "org.unifiedpush.Distributor.fake");
    auto conn = sdbus::createSessionBusConnectionWithAddress(bus.address());
    auto rogue = sdbus::createSessionBusConnectionWithAddress(bus.address());
    Heard heard;
    testing::StderrCapture log;
    push::Connector connector(*conn, "io.github.davsyncd.test", "", heard.handlers());
    connector.add({"token-1", "davsyncd: test", "", {}});
    std::vector<sdbus::IConnection*> all{conn.get(), &distributor.connection(), rogue.get()};
    REQUIRE(pump(all, [&] { return !distributor.tokens.empty(); }));

    // Another local process that knows (or guesses) the token.
    auto proxy = sdbus::createProxy(*rogue, distributor.connector(), push::kConnectorPath);
    bool answered = false;
    proxy->callMethodAsync("NewEndpoint")
        .onInterface("org.unifiedpush.Connector2")
        .withArguments(Dict{{"token", sdbus::Variant(std::string("token-1"))},
                            {"endpoint", sdbus::Variant(std::string("https://attacker.example/e"))}})
        .uponReplyInvoke([&](const sdbus::Error*, const Dict&) { answered = true; });
    REQUIRE(pump(all, [&] { return answered; }));
    CHECK(heard.endpoints.empty());
    CHECK(log.text().find("not our distributor") != std::string::npos);

    distributor.send_endpoint("token-1", "https://push.example/wpush/abc");
    REQUIRE(pump(all, [&] { return heard.endpoints.size() == 1; }));
    CHECK(heard.endpoints[0] == "https://push.example/wpush/abc");
}

}  // TEST_SUITE
