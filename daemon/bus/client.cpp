#include "bus/client.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <set>

#include "bus/objects.hpp"
#include "core/log.hpp"

namespace davsyncd::bus {
namespace {

constexpr const char* kManager = "io.github.davsyncd.Manager1";
constexpr const char* kAccount = "io.github.davsyncd.Account1";
constexpr const char* kCollection = "io.github.davsyncd.Collection1";

using PropMap = std::map<std::string, sdbus::Variant>;
using ManagedObjects = std::map<sdbus::ObjectPath, std::map<std::string, PropMap>>;

nlohmann::json props_to_json(const PropMap& props) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : props) j[k] = to_json(v);
    return j;
}

[[noreturn]] void rethrow(const sdbus::Error& e) {
    auto name = e.getName();
    if (name == "org.freedesktop.DBus.Error.ServiceUnknown" || name == "org.freedesktop.DBus.Error.NameHasNoOwner")
        throw NotRunning("davsyncd is not running (start it with: systemctl --user start davsyncd)");
    throw;
}

}  // namespace

nlohmann::json to_json(const sdbus::Variant& v) {
    auto type = std::string(v.peekValueType());
    if (type == "s") return v.get<std::string>();
    if (type == "o") return std::string(v.get<sdbus::ObjectPath>());
    if (type == "t") return v.get<uint64_t>();
    if (type == "u") return v.get<uint32_t>();
    if (type == "i") return v.get<int32_t>();
    if (type == "x") return v.get<int64_t>();
    if (type == "b") return v.get<bool>();
    if (type == "d") return v.get<double>();
    if (type == "as") return v.get<std::vector<std::string>>();
    if (type == "ao") {
        std::vector<std::string> out;
        for (const auto& p : v.get<std::vector<sdbus::ObjectPath>>()) out.push_back(p);
        return out;
    }
    return "<" + type + ">";
}

Client::Client() {
    try {
        connection_ = sdbus::createSessionBusConnection();
    } catch (const sdbus::Error& e) {
        throw NotRunning(cat("cannot reach the session bus: ", e.getMessage()));
    }
}

Client::~Client() {
    if (!slots_.empty()) connection_->leaveEventLoop();
}

Snapshot Client::snapshot() {
    Snapshot snap;
    try {
        auto root = sdbus::createProxy(*connection_, kBusName, kRootPath);
        PropMap manager;
        root->callMethod("GetAll").onInterface("org.freedesktop.DBus.Properties").withArguments(std::string(kManager)).storeResultsTo(manager);
        snap.manager = props_to_json(manager);
        ManagedObjects objects;
        root->callMethod("GetManagedObjects").onInterface("org.freedesktop.DBus.ObjectManager").storeResultsTo(objects);
        for (const auto& [path, interfaces] : objects) {
            if (auto it = interfaces.find(kAccount); it != interfaces.end()) snap.accounts[path] = props_to_json(it->second);
            if (auto it = interfaces.find(kCollection); it != interfaces.end()) snap.collections[path] = props_to_json(it->second);
        }
    } catch (const sdbus::Error& e) {
        rethrow(e);
    }
    return snap;
}

void Client::call(const std::string& path, const char* interface, const char* method) {
    try {
        auto proxy = sdbus::createProxy(*connection_, kBusName, path);
        proxy->callMethod(method).onInterface(interface);
    } catch (const sdbus::Error& e) {
        rethrow(e);
    }
}

void Client::sync_all() { call(kRootPath, kManager, "SyncAll"); }

bool Client::sync_and_wait(const std::string& path, const char* interface, std::chrono::seconds timeout,
                           const FinishedHandler& on_finished) {
    // The accounts whose sync we wait for: one, or all of them.
    std::set<std::string> waiting;
    auto snap = snapshot();
    if (path.empty()) {
        for (const auto& [account, props] : snap.accounts) waiting.insert(account);
    } else {
        for (const auto& [account, props] : snap.accounts)
            if (path == account || path.starts_with(account + "/")) waiting.insert(account);
    }
    std::mutex mu;
    std::condition_variable cv;
    std::map<std::string, uint64_t> started;  // account path -> id of the sync asked for here
    // Subscribed before the call, so that no SyncStarted can be missed.
    watch([&](const std::string& from, const std::string&, const std::string& member, const nlohmann::json& args) {
        std::lock_guard lock(mu);
        if (!waiting.contains(from)) return;
        if (member == "SyncStarted" && !started.contains(from)) {
            auto reasons = args.value("reasons", std::vector<std::string>{});
            if (std::find(reasons.begin(), reasons.end(), "user") != reasons.end()) started[from] = args["id"];
        } else if (member == "SyncFinished" && started.contains(from) && args["id"] == started[from]) {
            on_finished(from, args["result"].get<std::string>(), args["summary"].get<std::string>());
            waiting.erase(from);
            cv.notify_all();
        }
    });
    if (path.empty()) sync_all();
    else sync(path, interface);
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return waiting.empty(); });
}
void Client::sync(const std::string& object_path, const char* interface) { call(object_path, interface, "Sync"); }
void Client::reload() { call(kRootPath, kManager, "Reload"); }
bool Client::running() {
    auto dbus = sdbus::createProxy(*connection_, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    bool has_owner = false;
    dbus->callMethod("NameHasOwner").onInterface("org.freedesktop.DBus").withArguments(std::string(kBusName)).storeResultsTo(has_owner);
    return has_owner;
}
void Client::confirm_deletion(const std::string& collection_path) {
    call(collection_path, "io.github.davsyncd.Collection1", "ConfirmDeletion");
}

void Client::watch(SignalHandler handler) {
    // Every signal of the daemon, whatever the object; decoded by member name
    // (the XML files define their arguments).
    auto rule = cat("type='signal',sender='", kBusName, "'");
    slots_.push_back(connection_->addMatch(rule, [handler](sdbus::Message& m) {
        std::string member = m.getMemberName();
        std::string path = m.getPath();
        std::string iface = m.getInterfaceName();
        nlohmann::json args = nlohmann::json::object();
        try {
            if (member == "PropertiesChanged") {
                std::string interface;
                PropMap changed;
                std::vector<std::string> invalidated;
                m >> interface >> changed >> invalidated;
                args = {{"interface", interface}, {"changed", props_to_json(changed)}};
            } else if (member == "SyncStarted") {
                uint64_t id;
                std::vector<std::string> reasons;
                m >> id >> reasons;
                args = {{"id", id}, {"reasons", reasons}};
            } else if (member == "SyncFinished") {
                uint64_t id;
                std::string result, summary;
                m >> id >> result >> summary;
                args = {{"id", id}, {"result", result}, {"summary", summary}};
            } else if (member == "Changed") {
                std::vector<std::string> written, removed;
                m >> written >> removed;
                args = {{"written", written}, {"removed", removed}};
            } else if (member == "InterfacesAdded") {
                sdbus::ObjectPath object;
                std::map<std::string, PropMap> interfaces;
                m >> object >> interfaces;
                nlohmann::json ifs = nlohmann::json::object();
                for (const auto& [name, props] : interfaces) ifs[name] = props_to_json(props);
                args = {{"object", std::string(object)}, {"interfaces", ifs}};
            } else if (member == "InterfacesRemoved") {
                sdbus::ObjectPath object;
                std::vector<std::string> interfaces;
                m >> object >> interfaces;
                args = {{"object", std::string(object)}, {"interfaces", interfaces}};
            }
        } catch (const sdbus::Error&) {
            args = {{"error", "undecodable arguments"}};
        }
        handler(path, iface, member, args);
    }));
    connection_->enterEventLoopAsync();
}

}  // namespace davsyncd::bus
