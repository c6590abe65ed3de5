// Client side of the davsyncd D-Bus API, for davsyncctl: a snapshot of all
// objects and their properties, plain calls, and signal subscriptions.
// Talks only D-Bus; knows nothing of the daemon's internals.
//
// Thread affinity: the caller's thread; signal callbacks run on the
// connection's own event-loop thread (see watch()).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <sdbus-c++/sdbus-c++.h>

namespace davsyncd::bus {

// Properties of one interface, converted to JSON values (strings, numbers,
// arrays of strings).
using Properties = nlohmann::json;

struct Snapshot {
    Properties manager;                       // io.github.davsyncd.Manager1
    std::map<std::string, Properties> accounts;     // by object path
    std::map<std::string, Properties> collections;  // by object path
};

// Thrown when the daemon is not on the bus; the message says how to start it.
struct NotRunning : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Client {
public:
    // Connects to the session bus. Throws NotRunning when no daemon owns the name.
    Client();
    ~Client();

    Snapshot snapshot();
    void sync_all();
    void sync(const std::string& object_path, const char* interface);
    void reload();
    // Whether a daemon owns the bus name now (asking does not start one
    // through D-Bus activation, unlike a call to it).
    bool running();
    void confirm_deletion(const std::string& collection_path);

    // A user sync of `target` (an account or collection object path with its
    // interface; an empty path = SyncAll), waiting for the SyncFinished of
    // each account it started. `on_finished(account path, result, summary)`
    // runs for each as it ends (on the connection's thread). False when
    // `timeout` passed first; the syncs go on in the daemon.
    using FinishedHandler =
        std::function<void(const std::string& account_path, const std::string& result, const std::string& summary)>;
    bool sync_and_wait(const std::string& path, const char* interface, std::chrono::seconds timeout,
                       const FinishedHandler& on_finished);

    // Delivers every signal the daemon sends (member, path, interface,
    // arguments as JSON) on the connection's thread until the Client dies.
    using SignalHandler = std::function<void(const std::string& path, const std::string& interface,
                                             const std::string& member, const nlohmann::json& args)>;
    void watch(SignalHandler handler);

private:
    void call(const std::string& path, const char* interface, const char* method);
    std::unique_ptr<sdbus::IConnection> connection_;
    std::vector<sdbus::Slot> slots_;
};

// A property value as JSON (the basic types and arrays of strings/paths
// that the API uses; anything else becomes its signature in angle brackets).
nlohmann::json to_json(const sdbus::Variant& v);

}  // namespace davsyncd::bus
