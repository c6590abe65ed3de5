#include "push/connector.hpp"

#include <algorithm>
#include <cstdlib>

#include "core/log.hpp"
#include "push/subscriptions.hpp"

namespace davsyncd::push {
namespace {

using Dict = std::map<std::string, sdbus::Variant>;

std::string get_string(const Dict& d, const char* key) {
    auto it = d.find(key);
    if (it == d.end() || !it->second.containsValueOfType<std::string>()) return {};
    return it->second.get<std::string>();
}

}  // namespace

// The D-Bus object: translates both connector versions to the Connector.
class Connector::Object final
    : public sdbus::AdaptorInterfaces<org::unifiedpush::Connector2_adaptor, org::unifiedpush::Connector1_adaptor> {
public:
    Object(sdbus::IConnection& c, Connector& owner) : AdaptorInterfaces(c, kConnectorPath), owner_(owner) {
        registerAdaptor();
    }
    ~Object() { unregisterAdaptor(); }

private:
    const sdbus::Message* caller() { return getObject().getCurrentlyProcessedMessage(); }

    Dict Message(const Dict& args) override {
        std::vector<uint8_t> bytes;
        if (auto it = args.find("message"); it != args.end() && it->second.containsValueOfType<std::vector<uint8_t>>())
            bytes = it->second.get<std::vector<uint8_t>>();
        owner_.on_message(caller(), get_string(args, "token"), bytes);
        return {};
    }
    Dict NewEndpoint(const Dict& args) override {
        owner_.on_endpoint(caller(), get_string(args, "token"), get_string(args, "endpoint"));
        return {};
    }
    Dict Unregistered(const Dict& args) override {
        owner_.on_unregistered(caller(), get_string(args, "token"));
        return {};
    }
    void Message(const std::string& token, const std::vector<uint8_t>& message, const std::string&) override {
        owner_.on_message(caller(), token, message);
    }
    void NewEndpoint(const std::string& token, const std::string& endpoint) override {
        owner_.on_endpoint(caller(), token, endpoint);
    }
    void Unregistered(const std::string& token) override { owner_.on_unregistered(caller(), token); }

    Connector& owner_;
};

Connector::Connector(sdbus::IConnection& connection, std::string service_name, std::string preferred, Handlers handlers)
    : connection_(connection),
      service_(std::move(service_name)),
      preferred_(std::move(preferred)),
      handlers_(std::move(handlers)) {
    if (preferred_.empty())
        if (const char* env = std::getenv("UNIFIEDPUSH_DISTRIBUTOR"); env && *env) preferred_ = env;
    if (!preferred_.empty() && !preferred_.starts_with(kDistributorPrefix)) preferred_ = kDistributorPrefix + preferred_;
    object_ = std::make_unique<Object>(connection_, *this);

    // Distributors come and go (a restart is a vanish and an appear).
    bus_proxy_ = sdbus::createProxy(connection_, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    bus_proxy_->uponSignal("NameOwnerChanged")
        .onInterface("org.freedesktop.DBus")
        .call([this](const std::string& name, const std::string& old_owner, const std::string& new_owner) {
            on_name_owner_changed(name, old_owner, new_owner);
        });
    bus_proxy_->finishRegistration();
    discover();
}

Connector::~Connector() { *alive_ = false; }

void Connector::discover() {
    std::weak_ptr<bool> alive = alive_;
    bus_proxy_->callMethodAsync("ListNames").onInterface("org.freedesktop.DBus").uponReplyInvoke(
        [this, alive](const sdbus::Error* error, const std::vector<std::string>& names) {
            if (!alive.lock()) return;
            if (error) {
                log::warning("push: cannot list bus names: ", error->getMessage());
                return;
            }
            choose(names);
        });
}

void Connector::choose(const std::vector<std::string>& names) {
    std::vector<std::string> found;
    for (const auto& n : names)
        if (n.starts_with(kDistributorPrefix)) found.push_back(n);
    std::sort(found.begin(), found.end());
    if (!preferred_.empty() && std::find(found.begin(), found.end(), preferred_) == found.end()) {
        // Any local process can own a distributor name and hand out an
        // endpoint of its choosing: the one the user named or none.
        log::warning("push: the configured distributor ", preferred_, " is not on the session bus; polling until it appears",
                     found.empty() ? "" : cat(" (", found.size(), " other distributor(s) present, not used)"));
        return;
    }
    if (found.empty()) {
        log::info("push: no UnifiedPush distributor on the session bus; polling only");
        return;
    }
    std::string pick = found.front();
    if (!preferred_.empty()) {
        pick = preferred_;
    } else if (found.size() > 1) {
        log::warning("push: ", found.size(), " distributors found; using ", pick,
                     " (choose with push_distributor in the config or UNIFIEDPUSH_DISTRIBUTOR)");
    }
    std::weak_ptr<bool> alive = alive_;
    bus_proxy_->callMethodAsync("GetNameOwner").onInterface("org.freedesktop.DBus").withArguments(pick).uponReplyInvoke(
        [this, alive, pick](const sdbus::Error* error, const std::string& owner) {
            if (!alive.lock() || error) return;
            use(pick, owner);
        });
}

void Connector::use(const std::string& name, const std::string& owner) {
    name_ = name;
    owner_ = owner;
    distributor_ = sdbus::createProxy(connection_, name_, "/org/unifiedpush/Distributor");
    log::info("push: using distributor ", name_);
    if (handlers_.distributor_changed) handlers_.distributor_changed(transport());
    for (const auto& [token, entry] : tokens_) register_token(token);
}

void Connector::add(const Registration& r) {
    tokens_[r.token] = Entry{r.description, r.vapid};
    if (distributor_) register_token(r.token);
}

void Connector::remove(const std::string& token) {
    if (!tokens_.erase(token) || !distributor_) return;
    Dict args{{"token", sdbus::Variant(token)}};
    distributor_->callMethodAsync("Unregister").onInterface("org.unifiedpush.Distributor2").withArguments(args)
        .uponReplyInvoke([](const sdbus::Error*, const Dict&) {});
}

// Version 2 first (it carries the VAPID key); a distributor that only knows
// version 1 answers UnknownMethod/UnknownInterface, and we ask again in v1.
void Connector::register_token(const std::string& token) {
    const auto& e = tokens_.at(token);
    Dict args{{"service", sdbus::Variant(service_)}, {"token", sdbus::Variant(token)},
              {"description", sdbus::Variant(e.description)}};
    if (!e.vapid.empty()) args["vapid"] = sdbus::Variant(e.vapid);
    std::weak_ptr<bool> alive = alive_;
    distributor_->callMethodAsync("Register").onInterface("org.unifiedpush.Distributor2").withArguments(args)
        .uponReplyInvoke([this, alive, token](const sdbus::Error* error, const Dict& result) {
            if (!alive.lock() || !tokens_.contains(token)) return;
            if (error) {
                auto n = error->getName();
                if (n == "org.freedesktop.DBus.Error.UnknownMethod" || n == "org.freedesktop.DBus.Error.UnknownInterface") {
                    register_v1(token);
                    return;
                }
                handlers_.lost(token, "Register failed: " + error->getMessage());
                return;
            }
            if (get_string(result, "success") != "REGISTRATION_SUCCEEDED") {
                auto reason = get_string(result, "reason");
                handlers_.lost(token, "distributor refused the registration (" + (reason.empty() ? "no reason" : reason) + ")");
            }
            // Success: the endpoint follows in NewEndpoint.
        });
}

void Connector::register_v1(const std::string& token) {
    std::weak_ptr<bool> alive = alive_;
    distributor_->callMethodAsync("Register").onInterface("org.unifiedpush.Distributor1")
        .withArguments(service_, token, tokens_.at(token).description)
        .uponReplyInvoke([this, alive, token](const sdbus::Error* error, const std::string& result, const std::string& reason) {
            if (!alive.lock() || !tokens_.contains(token)) return;
            if (error) handlers_.lost(token, "Register (v1) failed: " + error->getMessage());
            else if (result != "REGISTRATION_SUCCEEDED" && result != "NEW_ENDPOINT")
                handlers_.lost(token, "distributor refused the registration (" + reason + ")");
        });
}

bool Connector::from_distributor(const sdbus::Message* m) const {
    if (m && !owner_.empty() && m->getSender() == owner_) return true;
    log::warning("push: ignoring a connector call from ", m ? m->getSender() : "?", ", which is not our distributor");
    return false;
}

void Connector::on_message(const sdbus::Message* m, const std::string& token, const std::vector<uint8_t>& bytes) {
    if (from_distributor(m) && tokens_.contains(token)) handlers_.message(token, bytes);
}

void Connector::on_endpoint(const sdbus::Message* m, const std::string& token, const std::string& endpoint) {
    if (!from_distributor(m) || !tokens_.contains(token)) return;
    if (endpoint.empty() || endpoint.size() > 1000) {
        log::warning("push: ignoring an endpoint of ", endpoint.size(), " bytes");
        return;
    }
    // The server will POST our notifications there, and anyone who knows
    // the URL can send to us: only https leaves the machine.
    if (auto why = endpoint_refusal(endpoint)) {
        log::warning("push: refusing the endpoint from ", name_, ": ", *why);
        handlers_.lost(token, cat("refused the distributor's endpoint: ", *why));
        return;
    }
    handlers_.new_endpoint(token, endpoint);
}

void Connector::on_unregistered(const sdbus::Message* m, const std::string& token) {
    if (from_distributor(m) && tokens_.contains(token)) handlers_.lost(token, "the distributor unregistered us");
}

void Connector::on_name_owner_changed(const std::string& name, const std::string&, const std::string& new_owner) {
    if (!name.starts_with(kDistributorPrefix)) return;
    if (name == name_) {
        if (new_owner.empty()) {
            log::warning("push: distributor ", name_, " left the bus; polling until it is back");
            owner_.clear();
            distributor_.reset();
            name_.clear();  // before the handlers: they ask distributor()
            for (const auto& [token, entry] : tokens_) handlers_.lost(token, "the distributor left the bus");
            if (handlers_.distributor_changed) handlers_.distributor_changed(transport());
            discover();  // another one may be there
        } else {
            use(name, new_owner);  // restarted: register again with the same tokens
        }
    } else if (name_.empty() && !new_owner.empty() && (preferred_.empty() || name == preferred_)) {
        discover();  // a distributor appeared while we had none (the configured one, when there is one)
    }
}

}  // namespace davsyncd::push
