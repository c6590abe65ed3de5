// The UnifiedPush connector: how push messages reach davsyncd on a Linux
// desktop (UnifiedPush D-Bus specification, versions 2 and 1).
//
// It serves org.unifiedpush.Connector2 and Connector1 at
// /org/unifiedpush/Connector on the daemon's connection, finds a
// distributor (a name org.unifiedpush.Distributor.*: the configured one or
// $UNIFIEDPUSH_DISTRIBUTOR, else the first in name order), registers one
// token per account with it (Distributor2 with the server's VAPID key,
// falling back to Distributor1), and follows distributors that appear,
// vanish or restart. Any local process may own a distributor name, so a
// configured distributor is never replaced by another: until it is on the
// bus the accounts poll. Calls from anyone but the unique name that owns
// the distributor we registered with are ignored, and an endpoint that is
// not https (plain http only on loopback, for tests) is refused.
//
// Every D-Bus call it makes is asynchronous: the main loop never blocks.
// Thread affinity: main loop only.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "Connector1-adaptor.h"
#include "Connector2-adaptor.h"
#include "push/transport.hpp"

namespace davsyncd::push {

inline constexpr const char* kConnectorPath = "/org/unifiedpush/Connector";
inline constexpr const char* kDistributorPrefix = "org.unifiedpush.Distributor.";

class Connector final : public Transport {
public:
    // `preferred`: a distributor name from the configuration, or "".
    Connector(sdbus::IConnection& connection, std::string service_name, std::string preferred, Handlers handlers);
    ~Connector() override;

    void add(const Registration& registration) override;
    void remove(const std::string& token) override;
    std::string transport() const override { return name_.empty() ? "" : "unifiedpush:" + name_; }
    const std::string& distributor() const { return name_; }

private:
    class Object;
    void discover();
    void choose(const std::vector<std::string>& names);
    void use(const std::string& name, const std::string& owner);
    void register_token(const std::string& token);
    void register_v1(const std::string& token);
    bool from_distributor(const sdbus::Message* m) const;
    void on_name_owner_changed(const std::string& name, const std::string& old_owner, const std::string& new_owner);

    friend class Object;
    void on_message(const sdbus::Message* m, const std::string& token, const std::vector<uint8_t>& bytes);
    void on_endpoint(const sdbus::Message* m, const std::string& token, const std::string& endpoint);
    void on_unregistered(const sdbus::Message* m, const std::string& token);

    sdbus::IConnection& connection_;
    std::string service_;
    std::string preferred_;
    Handlers handlers_;
    std::unique_ptr<Object> object_;
    std::unique_ptr<sdbus::IProxy> bus_proxy_;   // org.freedesktop.DBus
    std::unique_ptr<sdbus::IProxy> distributor_;
    std::string name_;    // well-known name of the distributor in use
    std::string owner_;   // its unique name: the only accepted caller
    struct Entry {
        std::string description;
        std::string vapid;
    };
    std::map<std::string, Entry> tokens_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace davsyncd::push
