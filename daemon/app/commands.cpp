#include "app/commands.hpp"

#include <iomanip>
#include <ostream>

#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/log.hpp"
#include "core/sanitize.hpp"
#include "dav/discovery.hpp"
#include "secrets/secret_service.hpp"
#include "sync/account_sync.hpp"

namespace davsyncd::app {

std::unique_ptr<dav::HttpClient> make_client_ptr(const config::Account& account, const std::atomic<bool>* cancel,
                                                 bool may_prompt) {
    dav::ClientOptions o;
    o.username = account.username;
    if (config::password_source(account) == config::PasswordSource::secret_service)
        o.password = secrets::lookup_password(account, {.may_prompt = may_prompt, .cancel = cancel});
    else
        o.password = config::resolve_password(account, config::kPasswordCommandTimeout, cancel);
    o.verify_tls = account.verify_tls;
    // Pinned to the configured origin, not to whatever is asked first (a
    // discovery cache written before origins were pinned may name another).
    o.allowed_origins = {account.url};
    if (!account.verify_tls) log::warning("account '", account.id, "': TLS certificate verification is OFF");
    return std::make_unique<dav::HttpClient>(std::move(o));
}

std::filesystem::path account_state_dir(const config::Config& cfg, const config::Account& account) {
    return cfg.state_dir / account.id;
}

namespace {

// Everything printed here comes from a server or the configuration: a
// terminal must show its control characters, not obey them.
std::string shown(std::string_view text) { return sanitize::for_terminal(text); }

void print_table(const config::Account& account, const dav::DiscoveryResult& r, std::ostream& out) {
    out << "Account '" << shown(account.id) << "' (" << shown(url::redact(account.url)) << ")\n";
    if (!r.principal_url.empty()) out << "  principal: " << shown(url::redact(r.principal_url)) << "\n";
    out << "  push: " << (r.server_advertises_push ? "server announces webdav-push" : "not announced by server") << "\n";
    for (const auto& c : r.collections) {
        out << "  " << std::left << std::setw(12) << dav::to_string(c.kind) << std::setw(24)
            << shown(c.display_name.empty() ? c.id : c.display_name) << shown(url::redact(c.url))
            << (c.read_only ? " read-only" : "") << "\n";
        out << "      id=" << shown(c.id);
        if (!c.color.empty()) out << " color=" << shown(c.color);
        if (!c.components.empty()) {
            out << " components=";
            for (size_t i = 0; i < c.components.size(); ++i) out << (i ? "," : "") << shown(c.components[i]);
        }
        // Without sync-collection the engine compares the ctag, then lists etags.
        out << " sync=" << (c.supports_sync_collection ? "sync-collection" : "etags");
        out << " push=" << (c.push.usable() ? "web-push" : "no") << "\n";
    }
}

}  // namespace

int discover(const config::Config& cfg, const std::string& only_account, bool json, std::ostream& out) {
    int status = 0;
    nlohmann::json doc = {{"accounts", nlohmann::json::array()}};
    for (const auto& account : cfg.accounts) {
        if (!only_account.empty() && account.id != only_account) continue;
        try {
            auto http = make_client_ptr(account, nullptr, /*may_prompt=*/true);  // the user runs this
            auto result = dav::discover(*http, account.url);
            sync::store_discovery(result, account, account_state_dir(cfg, account));
            log::info("account '", account.id, "': discovered ", result.collections.size(), " collections in ",
                      http->requests_sent(), " requests");
            if (json) {
                auto j = dav::to_json(result);
                j["id"] = account.id;
                doc["accounts"].push_back(std::move(j));
            }
            else print_table(account, result, out);
        } catch (const std::exception& e) {
            log::error("account '", account.id, "': discovery failed: ", e.what());
            status = 1;
        }
    }
    // ASCII only (\uXXXX escapes): the same data for a parser, nothing a
    // terminal acts on; bytes that are not UTF-8 become U+FFFD instead of
    // an exception that would lose the whole listing.
    if (json) out << doc.dump(2, ' ', true, nlohmann::json::error_handler_t::replace) << "\n";
    return status;
}

int sync_once(const config::Config& cfg, const std::string& only_account, bool force_delete, std::ostream& out) {
    int status = 0;
    for (const auto& account : cfg.accounts) {
        if (!only_account.empty() && account.id != only_account) continue;
        try {
            auto http = make_client_ptr(account, nullptr, /*may_prompt=*/true);  // the user runs this
            auto state_dir = account_state_dir(cfg, account);
            auto found = sync::cached_or_rediscovered(*http, account, state_dir, kDiscoveryMaxAge);
            bool collection_gone = false;
            for (const auto& plan : sync::plan_collections(account, state_dir, found.collections)) {
                try {
                    auto report = sync::sync_collection(*http, plan, account, {.force_delete = force_delete});
                    out << shown(sync::summary(plan.label, report)) << std::endl;
                    if (report.refused_mass_deletion) status = 1;
                } catch (const std::exception& e) {
                    if (auto* remote = dynamic_cast<const dav::RemoteError*>(&e))
                        collection_gone |= remote->status == 404 || remote->status == 410;
                    log::error(plan.label, ": sync failed: ", e.what());
                    out << shown(plan.label) << ": FAILED: " << shown(e.what()) << std::endl;
                    status = 1;
                }
            }
            // Deleted or unshared since the cached discovery: find out now, so
            // that its folder is set aside and the next run does not fail on it.
            if (collection_gone && !found.discovered) sync::rediscover(*http, account, state_dir);
        } catch (const secrets::SecretError& e) {
            log::error(e.what());  // names the account already
            status = 1;
        } catch (const std::exception& e) {
            log::error("account '", account.id, "': ", e.what());
            status = 1;
        }
    }
    return status;
}

}  // namespace davsyncd::app
