#include "push/subscriptions.hpp"

#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/log.hpp"
#include "sync/item.hpp"

namespace davsyncd::push {

std::optional<std::string> endpoint_refusal(std::string_view endpoint) {
    auto u = url::parse(endpoint);
    if (!u) return std::string("not an http(s) URL");
    if (u->scheme == "https" || url::is_loopback(*u)) return std::nullopt;
    return cat("plain http to ", u->origin(), "; only https is accepted (or http on loopback)");
}

bool registration_on_collection_origin(const std::string& collection_url, const RegistrationUrl& registration) {
    auto c = url::parse(collection_url);
    auto r = url::parse(registration.str());
    return c && r && url::same_origin(*c, *r);
}

AccountPushState AccountPushState::load(const std::filesystem::path& file) {
    AccountPushState s;
    std::error_code ec;
    if (std::filesystem::exists(file, ec)) {
        try {
            auto j = nlohmann::json::parse(fs::read_file(file));
            s.token = j.value("token", "");
            s.endpoint = j.value("endpoint", "");
            const nlohmann::json subs = j.contains("subscriptions") ? j["subscriptions"] : nlohmann::json::object();
            for (const auto& [coll, sub] : subs.items()) {
                Subscription x{RegistrationUrl(sub.value("url", "")), std::nullopt, sub.value("push_resource", ""), std::nullopt};
                if (sub.contains("expires") && sub["expires"].is_number())
                    x.expires = SystemTime(std::chrono::seconds(sub["expires"].get<int64_t>()));
                if (sub.contains("renewed_at") && sub["renewed_at"].is_number())
                    x.renewed_at = SystemTime(std::chrono::seconds(sub["renewed_at"].get<int64_t>()));
                if (x.url.empty()) continue;
                // Written by a version that took any Location: never DELETE there.
                if (!registration_on_collection_origin(coll, x.url)) {
                    log::warning(file.string(), ": forgetting the push registration of ", url::redact(coll),
                                 " at ", url::redact(x.url.str()), ": another origin than the collection's");
                    continue;
                }
                s.subscriptions[coll] = x;
            }
            if (!s.endpoint.empty()) {
                if (auto why = endpoint_refusal(s.endpoint)) {
                    log::warning(file.string(), ": forgetting the stored push endpoint: ", *why);
                    s.endpoint.clear();
                }
            }
        } catch (const std::exception& e) {
            log::warning(file.string(), ": unreadable (", e.what(), "); starting push set-up afresh");
            s = {};
        }
    }
    if (s.token.empty()) s.token = sync::random_uuid();
    return s;
}

void AccountPushState::save(const std::filesystem::path& file) const {
    nlohmann::json subs = nlohmann::json::object();
    for (const auto& [coll, sub] : subscriptions) {
        nlohmann::json j{{"url", sub.url.str()}, {"push_resource", sub.push_resource}};
        if (sub.expires)
            j["expires"] = std::chrono::duration_cast<std::chrono::seconds>(sub.expires->time_since_epoch()).count();
        if (sub.renewed_at)
            j["renewed_at"] = std::chrono::duration_cast<std::chrono::seconds>(sub.renewed_at->time_since_epoch()).count();
        subs[coll] = j;
    }
    fs::make_dirs(file.parent_path(), 0700);
    fs::write_atomic(file, nlohmann::json{{"token", token}, {"endpoint", endpoint}, {"subscriptions", subs}}.dump(2) + "\n",
                     0600);
}

std::optional<SystemTime> renewal_due(const Subscription& sub) {
    if (!sub.expires) return std::nullopt;
    if (!sub.renewed_at || *sub.renewed_at >= *sub.expires) return *sub.expires - std::chrono::hours(24);
    return *sub.renewed_at + (*sub.expires - *sub.renewed_at) * 2 / 3;
}

std::optional<SystemTime> next_renewal(const std::map<std::string, Subscription>& subs) {
    std::optional<SystemTime> first;
    for (const auto& [collection, sub] : subs)
        if (auto due = renewal_due(sub); due && (!first || *due < *first)) first = due;
    return first;
}

namespace {

void unregister(dav::HttpClient& http, const std::string& collection, const Subscription& sub, MaintainResult& r) {
    if (!registration_on_collection_origin(collection, sub.url)) {
        log::warning("push: ", url::redact(collection), ": not sending DELETE to the registration ",
                     url::redact(sub.url.str()), ": another origin than the collection's; forgetting it");
        return;
    }
    try {
        auto resp = http.send(dav::Request::del(sub.url.str()));
        if (resp.ok() || resp.status == 404 || resp.status == 410) ++r.removed;
        else log::warning("push: ", url::redact(collection), ": DELETE of the subscription answered HTTP ", resp.status);
    } catch (const dav::HttpError& e) {
        log::warning("push: ", e.what());
    }
}

}  // namespace

MaintainResult maintain(dav::HttpClient& http, const std::vector<sync::PlannedCollection>& plans,
                        const MaintainInput& in, Subscriptions& subs) {
    MaintainResult r;
    // 1. Registrations that must go: their collection left, or the endpoint changed.
    for (auto it = subs.begin(); it != subs.end();) {
        bool planned = std::any_of(plans.begin(), plans.end(), [&](const auto& p) { return p.info.url == it->first; });
        if (planned && !in.endpoint.empty() && it->second.push_resource == in.endpoint) {
            ++it;
            continue;
        }
        unregister(http, it->first, it->second, r);
        it = subs.erase(it);
    }
    if (in.endpoint.empty()) return r;

    // 2. Register or renew every push-capable collection.
    for (const auto& plan : plans) {
        if (!plan.info.push.usable()) continue;
        auto existing = subs.find(plan.info.url);
        auto due = existing != subs.end() ? renewal_due(existing->second) : std::nullopt;
        bool fresh = existing != subs.end() && (!due || in.now < *due);
        if (fresh) continue;
        RegisterRequest req{in.endpoint, in.public_key, in.auth_secret, in.now + in.lifetime};
        try {
            auto resp = http.send(dav::Request::post(plan.info.url, register_body(req), "application/xml; charset=utf-8"));
            RegisterRefused why;
            if (auto reg = parse_register_response(resp, plan.info.url, why)) {
                bool renewal = existing != subs.end();
                subs[plan.info.url] = Subscription{reg->url, reg->expires, in.endpoint, in.now};
                ++(renewal ? r.renewed : r.registered);
                log::info("push: ", plan.label, ": ", renewal ? "renewed" : "subscribed", " (",
                          reg->expires ? http_date(*reg->expires) : std::string("no expiry given"), ")");
            } else {
                r.errors.push_back(cat(plan.label, ": push registration refused: ", why.reason));
                if (why.retry_after) r.retry_after = why.retry_after;
                log::warning("push: ", plan.label, ": registration refused: ", why.reason);
            }
        } catch (const dav::HttpError& e) {
            r.errors.push_back(cat(plan.label, ": ", e.what()));
        }
    }
    return r;
}

dav::HttpClient::WriteDecorator dont_notify_decorator(const Subscriptions& subs) {
    if (subs.empty()) return {};
    return [subs](dav::Request& req) {
        // The collection is the request URL itself (PROPPATCH, POST) or its parent (a member).
        std::string target = req.url;
        std::string parent = target;
        if (parent.ends_with('/')) parent.pop_back();
        parent = parent.substr(0, parent.rfind('/') + 1);
        for (const auto* key : {&target, &parent}) {
            if (auto it = subs.find(*key); it != subs.end()) {
                req.header("Push-Dont-Notify", dont_notify_value(it->second.url));
                return;
            }
        }
    };
}

}  // namespace davsyncd::push
