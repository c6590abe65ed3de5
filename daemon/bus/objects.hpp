// The daemon's D-Bus objects. This layer only translates: each object holds
// a snapshot of values to serve as properties, emits one PropertiesChanged
// per update for the names whose values changed, and hands method calls to
// the callbacks it was given. The contract is the XML in dbus/.
//
// Every string property and signal argument passes sanitize::for_bus as it
// is set: much of it is server text, and sd-bus refuses (by throwing) what
// JSON and XML allow, such as a display name holding U+FDD0.
//
// Thread affinity: main loop only (the thread that processes the connection).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "core/log.hpp"
#include "Account1-adaptor.h"
#include "Collection1-adaptor.h"
#include "Manager1-adaptor.h"

namespace davsyncd::bus {

// A signal to a bus that has gone away (the session is ending) is not worth
// dying for, least of all in a destructor: BusPump notices the lost
// connection and stops the daemon.
template <typename Fn>
void emit_quietly(Fn&& emit) noexcept {
    try {
        emit();
    } catch (const sdbus::Error& e) {
        log::debug("D-Bus signal not sent: ", e.getMessage());
    }
}

inline constexpr const char* kBusName = "io.github.davsyncd";
inline constexpr const char* kRootPath = "/io/github/davsyncd";

// Named errors of the API (see the XML files).
namespace error {
inline constexpr const char* kNoSuchAccount = "io.github.davsyncd.Error.NoSuchAccount";
inline constexpr const char* kConfigInvalid = "io.github.davsyncd.Error.ConfigInvalid";
inline constexpr const char* kDisabled = "io.github.davsyncd.Error.Disabled";
inline constexpr const char* kNothingToConfirm = "io.github.davsyncd.Error.NothingToConfirm";
}  // namespace error

// Object path element for an id: [A-Za-z0-9_] kept, anything else as _XX.
std::string path_element(const std::string& id);
std::string account_path(const std::string& account_id);
std::string collection_path(const std::string& account_id, const std::string& folder);

struct ManagerValues {
    std::string version;
    std::string config_path;
    std::string push_distributor;
    std::vector<sdbus::ObjectPath> accounts;
    friend bool operator==(const ManagerValues&, const ManagerValues&) = default;
};

class ManagerObject final
    : public sdbus::AdaptorInterfaces<io::github::davsyncd::Manager1_adaptor, sdbus::ObjectManager_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    struct Handlers {
        std::function<void()> sync_all;
        std::function<void()> reload;  // throws sdbus::Error(kConfigInvalid, ...) on a bad config
    };
    ManagerObject(sdbus::IConnection& connection, ManagerValues values, Handlers handlers);
    ~ManagerObject();
    void update(const ManagerValues& values);

private:
    void SyncAll() override { handlers_.sync_all(); }
    void Reload() override { handlers_.reload(); }
    std::string Version() override { return v_.version; }
    std::string ConfigPath() override { return v_.config_path; }
    std::string PushDistributor() override { return v_.push_distributor; }
    std::vector<sdbus::ObjectPath> Accounts() override { return v_.accounts; }

    ManagerValues v_;
    Handlers handlers_;
};

struct AccountValues {
    std::string id, url, state;
    uint64_t last_sync = 0, last_success = 0;
    std::string last_result, last_error;
    uint64_t next_sync = 0;
    std::string push_state = "poll-only";
    std::string push_transport;
    std::vector<sdbus::ObjectPath> collections;
    friend bool operator==(const AccountValues&, const AccountValues&) = default;
};

class AccountObject final
    : public sdbus::AdaptorInterfaces<io::github::davsyncd::Account1_adaptor, sdbus::ManagedObject_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    // Announces itself with InterfacesAdded; the destructor sends InterfacesRemoved.
    AccountObject(sdbus::IConnection& connection, const std::string& path, AccountValues values,
                  std::function<void()> on_sync);
    ~AccountObject();
    void update(const AccountValues& values);
    void sync_started(uint64_t id, const std::vector<std::string>& reasons);
    void sync_finished(uint64_t id, const std::string& result, const std::string& summary);
    void collection_removed(const std::string& id, const std::string& folder, const std::string& kept_at);

private:
    void Sync() override { on_sync_(); }
    std::string Id() override { return v_.id; }
    std::string Url() override { return v_.url; }
    std::string State() override { return v_.state; }
    uint64_t LastSync() override { return v_.last_sync; }
    uint64_t LastSuccess() override { return v_.last_success; }
    std::string LastResult() override { return v_.last_result; }
    std::string LastError() override { return v_.last_error; }
    uint64_t NextSync() override { return v_.next_sync; }
    std::string PushState() override { return v_.push_state; }
    std::string PushTransport() override { return v_.push_transport; }
    std::vector<sdbus::ObjectPath> Collections() override { return v_.collections; }

    AccountValues v_;
    std::function<void()> on_sync_;
};

struct CollectionValues {
    std::string id, url, display_name, kind, color, local_path;
    uint32_t item_count = 0;
    uint64_t last_sync = 0;
    std::string push_subscription;
    uint64_t push_expires = 0;
    uint32_t pending_pushes = 0;
    bool read_only = false;
    uint32_t pending_uploads = 0, refused_uploads = 0;
    std::string deletion_refused;
    friend bool operator==(const CollectionValues&, const CollectionValues&) = default;
};

class CollectionObject final
    : public sdbus::AdaptorInterfaces<io::github::davsyncd::Collection1_adaptor, sdbus::ManagedObject_adaptor,
                                      sdbus::Properties_adaptor> {
public:
    struct Handlers {
        std::function<void()> sync;
        std::function<void()> confirm_deletion;  // throws sdbus::Error(kNothingToConfirm, ...)
    };
    CollectionObject(sdbus::IConnection& connection, const std::string& path, CollectionValues values,
                     Handlers handlers);
    ~CollectionObject();
    void update(const CollectionValues& values);
    void changed(const std::vector<std::string>& written, const std::vector<std::string>& removed);

private:
    void Sync() override { handlers_.sync(); }
    void ConfirmDeletion() override { handlers_.confirm_deletion(); }
    std::string Id() override { return v_.id; }
    std::string Url() override { return v_.url; }
    std::string DisplayName() override { return v_.display_name; }
    std::string Kind() override { return v_.kind; }
    std::string Color() override { return v_.color; }
    std::string LocalPath() override { return v_.local_path; }
    uint32_t ItemCount() override { return v_.item_count; }
    uint64_t LastSync() override { return v_.last_sync; }
    std::string PushSubscription() override { return v_.push_subscription; }
    uint64_t PushExpires() override { return v_.push_expires; }
    uint32_t PendingPushes() override { return v_.pending_pushes; }
    bool ReadOnly() override { return v_.read_only; }
    uint32_t PendingUploads() override { return v_.pending_uploads; }
    uint32_t RefusedUploads() override { return v_.refused_uploads; }
    std::string DeletionRefused() override { return v_.deletion_refused; }

    CollectionValues v_;
    Handlers handlers_;
};

}  // namespace davsyncd::bus
