#include "bus/objects.hpp"

#include "core/sanitize.hpp"

namespace davsyncd::bus {
namespace {

using io::github::davsyncd::Account1_adaptor;
using io::github::davsyncd::Collection1_adaptor;
using io::github::davsyncd::Manager1_adaptor;

// Most values are plain ASCII: only a string sd-bus would refuse is copied.
void make_sendable(std::string& s) {
    if (!sanitize::bus_safe(s)) s = sanitize::for_bus(s);
}

std::string sendable(const std::string& s) { return sanitize::bus_safe(s) ? s : sanitize::for_bus(s); }

std::vector<std::string> sendable(const std::vector<std::string>& list) {
    std::vector<std::string> out(list);
    for (auto& s : out) make_sendable(s);
    return out;
}

// Object paths are not cleaned: path_element() builds them from [A-Za-z0-9_].
ManagerValues sendable(ManagerValues v) {
    for (auto* s : {&v.version, &v.config_path, &v.push_distributor}) make_sendable(*s);
    return v;
}

AccountValues sendable(AccountValues v) {
    for (auto* s : {&v.id, &v.url, &v.state, &v.last_result, &v.last_error, &v.push_state, &v.push_transport}) make_sendable(*s);
    return v;
}

CollectionValues sendable(CollectionValues v) {
    for (auto* s : {&v.id, &v.url, &v.display_name, &v.kind, &v.color, &v.local_path, &v.push_subscription,
                    &v.deletion_refused})
        make_sendable(*s);
    return v;
}

// Adds `name` to `changed` when the member differs between old and new.
template <typename T>
void diff(std::vector<std::string>& changed, const char* name, const T& before, const T& after) {
    if (!(before == after)) changed.emplace_back(name);
}

}  // namespace

std::string path_element(const std::string& id) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : id) {
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (plain) {
            out += static_cast<char>(c);
        } else {
            out += '_';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out.empty() ? "_" : out;
}

std::string account_path(const std::string& account_id) {
    return std::string(kRootPath) + "/account/" + path_element(account_id);
}

std::string collection_path(const std::string& account_id, const std::string& folder) {
    return account_path(account_id) + "/collection/" + path_element(folder);
}

// --- Manager -------------------------------------------------------------------

ManagerObject::ManagerObject(sdbus::IConnection& connection, ManagerValues values, Handlers handlers)
    : AdaptorInterfaces(connection, kRootPath), v_(sendable(std::move(values))), handlers_(std::move(handlers)) {
    registerAdaptor();
}

ManagerObject::~ManagerObject() { unregisterAdaptor(); }

void ManagerObject::update(const ManagerValues& new_values) {
    ManagerValues values = sendable(new_values);
    std::vector<std::string> changed;
    diff(changed, "Version", v_.version, values.version);
    diff(changed, "ConfigPath", v_.config_path, values.config_path);
    diff(changed, "PushDistributor", v_.push_distributor, values.push_distributor);
    diff(changed, "Accounts", v_.accounts, values.accounts);
    v_ = std::move(values);
    if (!changed.empty()) emit_quietly([&] { emitPropertiesChangedSignal(Manager1_adaptor::INTERFACE_NAME, changed); });
}

// --- Account ---------------------------------------------------------------------

AccountObject::AccountObject(sdbus::IConnection& connection, const std::string& path, AccountValues values,
                             std::function<void()> on_sync)
    : AdaptorInterfaces(connection, path), v_(sendable(std::move(values))), on_sync_(std::move(on_sync)) {
    registerAdaptor();
    emitInterfacesAddedSignal({Account1_adaptor::INTERFACE_NAME});
}

AccountObject::~AccountObject() {
    emit_quietly([&] { emitInterfacesRemovedSignal({Account1_adaptor::INTERFACE_NAME}); });
    unregisterAdaptor();
}

void AccountObject::update(const AccountValues& new_values) {
    AccountValues values = sendable(new_values);
    std::vector<std::string> changed;
    diff(changed, "Id", v_.id, values.id);
    diff(changed, "Url", v_.url, values.url);
    diff(changed, "State", v_.state, values.state);
    diff(changed, "LastSync", v_.last_sync, values.last_sync);
    diff(changed, "LastSuccess", v_.last_success, values.last_success);
    diff(changed, "LastResult", v_.last_result, values.last_result);
    diff(changed, "LastError", v_.last_error, values.last_error);
    diff(changed, "NextSync", v_.next_sync, values.next_sync);
    diff(changed, "PushState", v_.push_state, values.push_state);
    diff(changed, "PushTransport", v_.push_transport, values.push_transport);
    diff(changed, "Collections", v_.collections, values.collections);
    v_ = std::move(values);
    if (!changed.empty()) emit_quietly([&] { emitPropertiesChangedSignal(Account1_adaptor::INTERFACE_NAME, changed); });
}

void AccountObject::sync_started(uint64_t id, const std::vector<std::string>& reasons) {
    emit_quietly([&] { emitSyncStarted(id, sendable(reasons)); });
}

void AccountObject::sync_finished(uint64_t id, const std::string& result, const std::string& summary) {
    emit_quietly([&] { emitSyncFinished(id, sendable(result), sendable(summary)); });
}

void AccountObject::collection_removed(const std::string& id, const std::string& folder, const std::string& kept_at) {
    emit_quietly([&] { emitCollectionRemoved(sendable(id), sendable(folder), sendable(kept_at)); });
}

// --- Collection ----------------------------------------------------------------------

CollectionObject::CollectionObject(sdbus::IConnection& connection, const std::string& path, CollectionValues values,
                                   Handlers handlers)
    : AdaptorInterfaces(connection, path), v_(sendable(std::move(values))), handlers_(std::move(handlers)) {
    registerAdaptor();
    emitInterfacesAddedSignal({Collection1_adaptor::INTERFACE_NAME});
}

CollectionObject::~CollectionObject() {
    emit_quietly([&] { emitInterfacesRemovedSignal({Collection1_adaptor::INTERFACE_NAME}); });
    unregisterAdaptor();
}

void CollectionObject::update(const CollectionValues& new_values) {
    CollectionValues values = sendable(new_values);
    std::vector<std::string> changed;
    diff(changed, "Id", v_.id, values.id);
    diff(changed, "Url", v_.url, values.url);
    diff(changed, "DisplayName", v_.display_name, values.display_name);
    diff(changed, "Kind", v_.kind, values.kind);
    diff(changed, "Color", v_.color, values.color);
    diff(changed, "LocalPath", v_.local_path, values.local_path);
    diff(changed, "ItemCount", v_.item_count, values.item_count);
    diff(changed, "LastSync", v_.last_sync, values.last_sync);
    diff(changed, "PushSubscription", v_.push_subscription, values.push_subscription);
    diff(changed, "PushExpires", v_.push_expires, values.push_expires);
    diff(changed, "PendingPushes", v_.pending_pushes, values.pending_pushes);
    diff(changed, "ReadOnly", v_.read_only, values.read_only);
    diff(changed, "PendingUploads", v_.pending_uploads, values.pending_uploads);
    diff(changed, "RefusedUploads", v_.refused_uploads, values.refused_uploads);
    diff(changed, "DeletionRefused", v_.deletion_refused, values.deletion_refused);
    v_ = std::move(values);
    if (!changed.empty()) emit_quietly([&] { emitPropertiesChangedSignal(Collection1_adaptor::INTERFACE_NAME, changed); });
}

void CollectionObject::changed(const std::vector<std::string>& written, const std::vector<std::string>& removed) {
    if (!written.empty() || !removed.empty())
        emit_quietly([&] { emitChanged(sendable(written), sendable(removed)); });
}

}  // namespace davsyncd::bus
