#include "config/config.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <csignal>
#include <chrono>
#include <limits>
#include <map>
#include <set>
#include <spawn.h>
#include <string_view>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/log.hpp"
#include "dav/http_client.hpp"
#include "dav/url.hpp"
#include "davsyncd_version.h"

extern char** environ;

namespace davsyncd::config {
namespace {

// ordered_json keeps the file's key order, so the first problem reported is
// the first one in the file.
using Json = nlohmann::ordered_json;

constexpr std::size_t kMaxFileSize = 16u * 1024 * 1024;
constexpr std::size_t kMaxDepth = 32;  // a valid config nests 5 deep
constexpr std::int64_t kMaxSyncInterval = 365LL * 24 * 3600;  // keeps timer arithmetic far from overflow
constexpr std::int64_t kMaxMultigetBatch = 1000;
// The installed example (share/doc/davsyncd under the build's prefix).
constexpr std::string_view kExample = DAVSYNCD_EXAMPLE_CONFIG;

// ---------------------------------------------------------------------------
// Positions. nlohmann/json records none for values, so after it has accepted
// the text we walk the (now known to be valid) text once more and note the
// line of every object key and array element, keyed by JSON pointer.

std::string pointer_escape(std::string_view key) {
    std::string out;
    out.reserve(key.size());
    for (char c : key) {
        if (c == '~') out += "~0";
        else if (c == '/') out += "~1";
        else out += c;
    }
    return out;
}

std::string child(const std::string& ptr, std::string_view key) { return ptr + "/" + pointer_escape(key); }
std::string child(const std::string& ptr, std::size_t index) { return ptr + "/" + std::to_string(index); }

struct Positions {
    std::unordered_map<std::string, int> line;  // pointer -> line of its key (members) or value (elements)
    // First repeated key per object: object pointer -> (key, line of the repeat).
    std::map<std::string, std::pair<std::string, int>> duplicate;

    int at(const std::string& ptr) const {
        auto it = line.find(ptr);
        return it == line.end() ? 0 : it->second;
    }
};

std::pair<int, int> line_col(std::string_view text, std::size_t offset) {
    offset = std::min(offset, text.size());
    int line = 1;
    std::size_t line_start = 0;
    for (std::size_t i = 0; i < offset; ++i)
        if (text[i] == '\n') { ++line; line_start = i + 1; }
    return {line, static_cast<int>(offset - line_start) + 1};
}

// Iterative (no recursion, so hostile nesting cannot blow the stack).
// Only called on text that nlohmann/json has parsed successfully.
Positions scan_positions(std::string_view text, const std::filesystem::path& source) {
    struct Frame {
        bool object = false;
        std::string ptr;
        std::size_t index = 0;
        std::set<std::string> keys;
    };
    Positions pos;
    std::vector<Frame> stack;
    std::string member_ptr;  // pointer of the value after the last key read
    bool want_key = false;
    int line = 1;
    std::size_t i = 0;
    if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // nlohmann skips a BOM too

    // Called where a value begins; returns its pointer.
    auto value_start = [&]() -> std::string {
        std::string ptr;
        if (stack.empty()) ptr = "";
        else if (stack.back().object) ptr = member_ptr;
        else {
            ptr = child(stack.back().ptr, stack.back().index++);
            pos.line.emplace(ptr, line);
        }
        if (ptr.empty()) pos.line.emplace(ptr, line);
        return ptr;
    };
    auto skip_string = [&]() {  // text[i] == '"'; leaves i after the closing quote
        ++i;
        while (i < text.size() && text[i] != '"') i += text[i] == '\\' ? 2 : 1;
        ++i;
    };

    while (i < text.size()) {
        char c = text[i];
        switch (c) {
        case '\n': ++line; ++i; break;
        case ' ': case '\t': case '\r': ++i; break;
        case '{': case '[': {
            std::string ptr = value_start();
            if (stack.size() >= kMaxDepth)
                throw ConfigError(cat(source.string(), ":", line, ": JSON nested deeper than ", kMaxDepth,
                                      " levels; this is not a davsyncd configuration"));
            Frame f;
            f.object = c == '{';
            f.ptr = std::move(ptr);
            stack.push_back(std::move(f));
            want_key = c == '{';
            ++i;
            break;
        }
        case '}': case ']':
            if (!stack.empty()) stack.pop_back();
            want_key = false;
            ++i;
            break;
        case ':': want_key = false; ++i; break;
        case ',': want_key = !stack.empty() && stack.back().object; ++i; break;
        case '"':
            if (want_key && !stack.empty() && stack.back().object) {
                std::size_t start = i;
                skip_string();
                std::string_view raw = text.substr(start, std::min(i, text.size()) - start);
                std::string key;
                if (raw.find('\\') == std::string_view::npos) {
                    key = std::string(raw.substr(1, raw.size() >= 2 ? raw.size() - 2 : 0));
                } else {
                    try {
                        key = Json::parse(raw).get<std::string>();
                    } catch (const nlohmann::json::exception&) {
                        key = std::string(raw);
                    }
                }
                Frame& f = stack.back();
                member_ptr = child(f.ptr, key);
                pos.line[member_ptr] = line;  // a repeated key: the last one wins, as in nlohmann
                if (!f.keys.insert(key).second) pos.duplicate.emplace(f.ptr, std::make_pair(key, line));
                want_key = false;
            } else {
                value_start();
                skip_string();
            }
            break;
        default:  // number, true, false, null
            value_start();
            do ++i;  // always advance, whatever the byte
            while (i < text.size() && std::string_view(" \t\r\n,]}:[{\"").find(text[i]) == std::string_view::npos);
            break;
        }
    }
    return pos;
}

// ---------------------------------------------------------------------------
// Small helpers for messages.

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

// The closest candidate when it is plausibly a typo, else "".
std::string closest(std::string_view word, const std::vector<std::string_view>& candidates) {
    if (word.size() > 64) return "";
    std::string w = lower(word);
    std::string best;
    std::size_t best_d = std::numeric_limits<std::size_t>::max();
    for (auto cand : candidates) {
        std::size_t d = edit_distance(w, lower(cand));
        if (d < best_d) { best_d = d; best = cand; }
    }
    std::size_t limit = std::max<std::size_t>(1, std::min<std::size_t>(3, best.size() / 3));
    return best_d <= limit ? best : "";
}

// A JSON value for a message: shortened, never a secret.
std::string show(const Json& v) {
    std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
}

const char* kind(const Json& v) {
    switch (v.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::object: return "an object";
    case Json::value_t::array: return "an array";
    case Json::value_t::string: return "a string";
    case Json::value_t::boolean: return "a boolean";
    case Json::value_t::number_float: return "a number with a fraction";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "an integer";
    default: return "something else";
    }
}

bool valid_id(std::string_view id) {
    if (id.empty() || id.size() > 64) return false;
    return std::all_of(id.begin(), id.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

// A D-Bus well-known name (org.freedesktop.DBus spec, "Bus names").
bool valid_bus_name(std::string_view name) {
    if (name.empty() || name.size() > 255 || name.front() == '.' || name.back() == '.') return false;
    std::size_t elements = 0;
    std::size_t start = 0;
    while (start <= name.size()) {
        std::size_t end = name.find('.', start);
        if (end == std::string_view::npos) end = name.size();
        std::string_view el = name.substr(start, end - start);
        if (el.empty() || (el[0] >= '0' && el[0] <= '9')) return false;
        for (char c : el)
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
                return false;
        ++elements;
        start = end + 1;
    }
    return elements >= 2;
}

// "" when `s` is an absolute http(s) URL with a host, else why not.
std::string url_problem(std::string_view s) {
    for (char c : s)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return "it contains a space or control character";
    std::string ls = lower(s);
    std::size_t rest;
    if (ls.rfind("https://", 0) == 0) rest = 8;
    else if (ls.rfind("http://", 0) == 0) rest = 7;
    else return "it must start with https:// or http://";
    std::string_view authority = s.substr(rest);
    authority = authority.substr(0, authority.find_first_of("/?#"));
    if (authority.find('@') != std::string_view::npos)
        return "it contains user info; put the user name in 'username' and the password in 'password_command'";
    std::string_view host = authority;
    std::optional<std::string_view> port;
    if (!authority.empty() && authority.front() == '[') {
        std::size_t close = authority.find(']');
        if (close == std::string_view::npos) return "its IPv6 address lacks a closing ']'";
        host = authority.substr(1, close - 1);
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return "unexpected text after the IPv6 address";
            port = after.substr(1);
        }
    } else if (std::size_t colon = authority.find(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
    }
    if (host.empty()) return "it has no host name";
    if (port) {
        if (port->empty() || port->size() > 5 ||
            !std::all_of(port->begin(), port->end(), [](char c) { return c >= '0' && c <= '9'; }))
            return "its port is not a number";
        int p = std::stoi(std::string(*port));
        if (p < 1 || p > 65535) return "its port is out of range";
    }
    return "";
}

std::filesystem::path strip_trailing_slash(std::filesystem::path p) {
    p = p.lexically_normal();
    if (!p.has_filename() && p.has_relative_path()) p = p.parent_path();
    return p;
}

// ---------------------------------------------------------------------------
// The validating walk.

class Reader {
public:
    Reader(std::string_view text, const std::filesystem::path& source, const fs::XdgDirs& xdg)
        : text_(text), source_(source) {
        cfg_.source = source;
        cfg_.state_dir = xdg.state_home / "davsyncd";
        cfg_.data_dir = xdg.data_home / "davsyncd";
    }

    Config run() {
        // nlohmann/json stops at a NUL byte as if the input ended there, so a
        // file padded with zeros (say, after a crash) would pass unnoticed.
        if (auto nul = text_.find('\0'); nul != std::string_view::npos) {
            auto [line, col] = line_col(text_, nul);
            throw ConfigError(cat(source_.string(), ":", line, ":", col, ": invalid JSON: NUL byte"));
        }
        Json root;
        try {
            root = Json::parse(text_.begin(), text_.end());
        } catch (const nlohmann::json::parse_error& e) {
            syntax_error(e.what(), e.byte);
        } catch (const nlohmann::json::exception& e) {
            syntax_error(e.what(), 0);
        }
        pos_ = scan_positions(text_, source_);
        read_root(root);
        for (auto& a : cfg_.accounts)
            if (!a.push_service) a.push_service = cfg_.push_service;
        check_roots();
        return std::move(cfg_);
    }

private:
    [[noreturn]] void fail(int line, const std::string& context, const std::string& what) const {
        std::string where = source_.string();
        if (line > 0) where += cat(":", line);
        throw ConfigError(cat(where, ": ", context, what));
    }

    [[noreturn]] void syntax_error(const std::string& what, std::size_t byte) const {
        // what(): "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ..."
        std::string detail = what;
        if (auto p = detail.find("parse error"); p != std::string::npos) {
            auto colon = detail.find(": ", p);
            if (colon != std::string::npos) detail = detail.substr(colon + 2);
        } else if (detail.rfind("[json.exception.", 0) == 0) {
            auto close = detail.find("] ");
            if (close != std::string::npos) detail = detail.substr(close + 2);
        }
        if (byte == 0) throw ConfigError(cat(source_.string(), ": invalid JSON: ", detail));
        // `byte` counts the characters read, so the offending one is at byte - 1.
        auto [line, col] = line_col(text_, byte - 1);
        throw ConfigError(cat(source_.string(), ":", line, ":", col, ": invalid JSON: ", detail));
    }

    static std::string key_ctx(const std::string& ctx, std::string_view key) { return cat(ctx, "key '", key, "': "); }

    void check_duplicates(const std::string& ptr, const std::string& ctx) const {
        auto it = pos_.duplicate.find(ptr);
        if (it != pos_.duplicate.end())
            fail(it->second.second, ctx, cat("key '", it->second.first, "' appears more than once"));
    }

    [[noreturn]] void unknown_key(int line, const std::string& ctx, std::string_view key,
                                  const std::vector<std::string_view>& known, std::string_view elsewhere_hint) const {
        std::string msg = cat("unknown key '", key, "'");
        if (auto s = closest(key, known); !s.empty()) msg += cat(" (did you mean '", s, "'?)");
        else if (!elsewhere_hint.empty()) msg += cat(" (", elsewhere_hint, ")");
        else {
            msg += " (known keys:";
            for (auto k : known) msg += cat(" ", k);
            msg += ")";
        }
        fail(line, ctx, msg);
    }

    const std::string& expect_string(const Json& v, int line, const std::string& ctx, std::string_view key,
                                     bool secret = false) const {
        if (!v.is_string())
            fail(line, key_ctx(ctx, key), cat("expected a string, got ", secret ? kind(v) : show(v)));
        return v.get_ref<const std::string&>();
    }

    // Integer in [min, max]; `what` describes the expectation.
    std::int64_t expect_int(const Json& v, int line, const std::string& ctx, std::string_view key, std::int64_t min,
                            std::int64_t max, const std::string& what) const {
        if (v.is_number_unsigned()) {
            auto u = v.get<std::uint64_t>();
            if (u > static_cast<std::uint64_t>(max))
                fail(line, key_ctx(ctx, key), cat("expected ", what, ", at most ", max, ", got ", show(v)));
            if (static_cast<std::int64_t>(u) >= min) return static_cast<std::int64_t>(u);
        } else if (v.is_number_integer()) {
            auto n = v.get<std::int64_t>();
            if (n >= min && n <= max) return n;
        }
        fail(line, key_ctx(ctx, key), cat("expected ", what, ", got ", show(v)));
    }

    void read_root(const Json& root) {
        int root_line = pos_.at("");
        if (!root.is_object())
            fail(root_line, "", cat("expected a JSON object ({\"accounts\": [...]}) at the top level, got ", kind(root)));
        check_duplicates("", "");
        static const std::vector<std::string_view> known = {"accounts", "push_distributor", "push_service", "$schema"};
        bool have_accounts = false;
        for (const auto& [key, value] : root.items()) {
            std::string ptr = child("", key);
            int line = pos_.at(ptr);
            if (key == "accounts") {
                have_accounts = true;
                if (!value.is_array())
                    fail(line, key_ctx("", key), cat("expected an array of accounts, got ", kind(value)));
                if (value.empty())
                    fail(line, key_ctx("", key),
                         cat("no accounts configured; add one such as {\"id\": \"personal\", \"url\": "
                             "\"https://dav.example.org/\", \"username\": \"alice\", \"password_command\": "
                             "\"pass show dav/alice\"} (see ",
                             kExample, ")"));
                for (std::size_t i = 0; i < value.size(); ++i) read_account(value[i], child(ptr, i), i + 1);
            } else if (key == "push_distributor") {
                const std::string& name = expect_string(value, line, "", key);
                static constexpr std::string_view prefix = "org.unifiedpush.Distributor.";
                if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size() || !valid_bus_name(name))
                    fail(line, key_ctx("", key),
                         cat("expected a D-Bus name starting with '", prefix, "' (for example '", prefix,
                             "ntfy'), got ", show(value)));
                cfg_.push_distributor = name;
            } else if (key == "push_service") {
                cfg_.push_service = read_push_service(value, line, "", key);
            } else if (key == "$schema") {
                expect_string(value, line, "", key);  // for editors; ignored
            } else {
                static const std::set<std::string_view> account_keys = {
                    "id", "url", "username", "password_command", "password", "secret", "local_root", "sync_interval",
                    "collections", "verify_tls", "conflict_policy", "multiget_batch",
                    "deletion_guard_items", "deletion_guard_percent"};
                unknown_key(line, "", key, known,
                            account_keys.count(key) ? "it belongs inside an entry of 'accounts'" : "");
            }
        }
        if (!have_accounts)
            fail(root_line, "",
                 cat("missing required key 'accounts' (a list of accounts; see ", kExample, ")"));
    }

    // An ntfy server for the built-in push receiver: its origin only. The
    // server will be told to POST our notifications there, so plain http
    // only on this machine (as for distributor endpoints).
    std::string read_push_service(const Json& value, int line, const std::string& ctx, const std::string& key) {
        const std::string& s = expect_string(value, line, ctx, key);
        if (auto why = url_problem(s); !why.empty())
            fail(line, key_ctx(ctx, key), cat("expected an https:// URL of an ntfy server, got ", show(value), ": ", why));
        auto u = url::parse(s);
        if (!u) fail(line, key_ctx(ctx, key), cat("expected an https:// URL of an ntfy server, got ", show(value)));
        if (u->scheme != "https" && !url::is_loopback(*u))
            fail(line, key_ctx(ctx, key),
                 cat("plain http to ", u->origin(), " is only allowed on this machine (127.0.0.1, ::1, localhost); use https://"));
        if ((u->path != "/" && !u->path.empty()) || !u->query.empty())
            fail(line, key_ctx(ctx, key),
                 cat("expected the server's address only (like \"https://ntfy.example.org\"), without a path, got ", show(value)));
        return u->origin();
    }

    void read_account(const Json& v, const std::string& ptr, std::size_t number) {
        int acc_line = pos_.at(ptr);
        std::string ctx = cat("account #", number, ": ");
        if (!v.is_object()) fail(acc_line, ctx, cat("expected an object, got ", kind(v)));

        Account a;
        // The id first: it names the account in every later message.
        auto id_it = v.find("id");
        if (id_it == v.end()) {
            check_duplicates(ptr, ctx);
            fail(acc_line, ctx, "missing required key 'id'");
        }
        {
            int line = pos_.at(child(ptr, "id"));
            const std::string& id = expect_string(*id_it, line, ctx, "id");
            if (!valid_id(id))
                fail(line, key_ctx(ctx, "id"),
                     cat("invalid id ", show(*id_it), ": use 1 to 64 letters, digits, '_' or '-'"));
            for (std::size_t j = 0; j < cfg_.accounts.size(); ++j)
                if (cfg_.accounts[j].id == id)
                    fail(line, key_ctx(ctx, "id"),
                         cat("duplicate account id '", id, "' (already used by account #", j + 1, " at line ",
                             account_lines_[j], ")"));
            a.id = id;
        }
        ctx = cat("account '", a.id, "': ");
        check_duplicates(ptr, ctx);

        static const std::vector<std::string_view> known = {
            "id", "url", "username", "password_command", "password", "secret", "local_root", "sync_interval",
            "collections", "verify_tls", "conflict_policy", "multiget_batch",
            "deletion_guard_items", "deletion_guard_percent", "push_service"};
        bool have_url = false, have_username = false, explicit_root = false;
        int password_line = 0, command_line = 0, secret_line = 0, root_line = 0;
        for (const auto& [key, value] : v.items()) {
            int line = pos_.at(child(ptr, key));
            if (key == "id") {
                // done above
            } else if (key == "url") {
                const std::string& url = expect_string(value, line, ctx, key);
                if (auto why = url_problem(url); !why.empty())
                    fail(line, key_ctx(ctx, key),
                         cat("expected an absolute http:// or https:// URL with a host, got ", show(value), ": ", why));
                a.url = url;
                have_url = true;
            } else if (key == "username") {
                a.username = expect_string(value, line, ctx, key);
                have_username = true;
            } else if (key == "password_command") {
                const std::string& cmd = expect_string(value, line, ctx, key);
                if (cmd.find_first_not_of(" \t\r\n") == std::string::npos)
                    fail(line, key_ctx(ctx, key), "must not be empty (a shell command that prints the password)");
                if (cmd.find('\0') != std::string::npos) fail(line, key_ctx(ctx, key), "must not contain NUL");
                a.password_command = cmd;
                command_line = line;
            } else if (key == "password") {
                a.password = expect_string(value, line, ctx, key, /*secret=*/true);
                password_line = line;
            } else if (key == "secret") {
                a.secret = read_secret(value, child(ptr, key), line, ctx);
                secret_line = line;
            } else if (key == "local_root") {
                a.local_root = read_local_root(value, line, ctx);
                explicit_root = true;
                root_line = line;
            } else if (key == "sync_interval") {
                a.sync_interval = std::chrono::seconds(expect_int(
                    value, line, ctx, key, 1, kMaxSyncInterval,
                    "a positive integer (seconds)"));
            } else if (key == "collections") {
                a.collections = read_filter(value, child(ptr, key), line, ctx);
            } else if (key == "verify_tls") {
                if (!value.is_boolean()) fail(line, key_ctx(ctx, key), cat("expected true or false, got ", show(value)));
                a.verify_tls = value.get<bool>();
            } else if (key == "conflict_policy") {
                const std::string& p = expect_string(value, line, ctx, key);
                if (p == "server-wins") a.conflict_policy = ConflictPolicy::server_wins;
                else if (p == "local-wins") a.conflict_policy = ConflictPolicy::local_wins;
                else if (p == "newest") a.conflict_policy = ConflictPolicy::newest;
                else {
                    std::string msg = cat("expected \"server-wins\", \"local-wins\" or \"newest\", got ", show(value));
                    if (auto s = closest(p, {"server-wins", "local-wins", "newest"}); !s.empty())
                        msg += cat(" (did you mean \"", s, "\"?)");
                    fail(line, key_ctx(ctx, key), msg);
                }
            } else if (key == "multiget_batch") {
                a.multiget_batch = static_cast<unsigned>(expect_int(
                    value, line, ctx, key, 1, kMaxMultigetBatch,
                    "a positive integer (items per request)"));
            } else if (key == "deletion_guard_items") {
                a.deletion_guard.max_items = static_cast<unsigned>(expect_int(
                    value, line, ctx, key, 0, 1000000, "a whole number of items (0 or more)"));
            } else if (key == "push_service") {
                a.push_service = read_push_service(value, line, ctx, key);
            } else if (key == "deletion_guard_percent") {
                a.deletion_guard.max_fraction = static_cast<double>(expect_int(
                    value, line, ctx, key, 0, 100, "a percentage from 0 to 100")) / 100.0;
            } else {
                unknown_key(line, ctx, key, known,
                            key == "push_distributor" || key == "accounts" ? "it belongs at the top level" : "");
            }
        }
        if (!have_url) fail(acc_line, ctx, "missing required key 'url' (the server, principal or collection home URL)");
        if (!have_username) fail(acc_line, ctx, "missing required key 'username' (\"\" for no authentication)");
        if (a.password && a.password_command)
            fail(std::max(password_line, command_line), ctx,
                 "both 'password' and 'password_command' are set; keep only one (prefer 'password_command')");
        // Neither: the password is in the Secret Service (`secret` or the default item).
        if (secret_line && (a.password || a.password_command))
            fail(secret_line, key_ctx(ctx, "secret"),
                 cat("names a Secret Service item, but '", a.password ? "password" : "password_command",
                     "' is set too; keep only one password source"));
        if (a.password)
            log::warning(source_.string(), ":", password_line, ": account '", a.id,
                         "': inline password in config; prefer password_command");
        if (!explicit_root) a.local_root = cfg_.data_dir / a.id;
        a.local_root = strip_trailing_slash(a.local_root);

        account_lines_.push_back(acc_line);
        root_lines_.push_back(explicit_root ? root_line : acc_line);
        explicit_roots_.push_back(explicit_root);
        cfg_.accounts.push_back(std::move(a));
    }

    // {"attribute": "value", ...}: the lookup attributes of an item stored by
    // another program (the default item is {"application": "davsyncd",
    // "account": <id>}).
    std::map<std::string, std::string> read_secret(const Json& v, const std::string& ptr, int line,
                                                   const std::string& ctx) const {
        std::string sctx = key_ctx(ctx, "secret");
        if (!v.is_object())
            fail(line, sctx,
                 cat("expected an object of Secret Service attributes such as {\"service\": \"dav.example.org\", "
                     "\"user\": \"alice\"}, got ", kind(v)));
        if (v.empty())
            fail(line, sctx,
                 "names no attribute; leave 'secret' out to use the default item "
                 "{\"application\": \"davsyncd\", \"account\": <id>}");
        check_duplicates(ptr, sctx);
        std::map<std::string, std::string> attrs;
        for (const auto& [key, value] : v.items()) {
            int kline = pos_.at(child(ptr, key));
            std::string name = cat("secret.", key);
            if (key.empty()) fail(kline ? kline : line, sctx, "attribute names must not be empty");
            if (!value.is_string())
                fail(kline ? kline : line, key_ctx(ctx, name), cat("expected a string, got ", show(value)));
            const auto& text = value.get_ref<const std::string&>();
            if (key.find('\0') != std::string::npos || text.find('\0') != std::string::npos)
                fail(kline ? kline : line, key_ctx(ctx, name), "must not contain NUL");
            attrs[key] = text;
        }
        return attrs;
    }

    std::filesystem::path read_local_root(const Json& value, int line, const std::string& ctx) const {
        const std::string& s = expect_string(value, line, ctx, "local_root");
        if (s.find('\0') != std::string::npos) fail(line, key_ctx(ctx, "local_root"), "must not contain NUL");
        if (s == "~" || s.rfind("~/", 0) == 0) {
            const char* home = std::getenv("HOME");
            if (!home || *home != '/')
                fail(line, key_ctx(ctx, "local_root"), cat("cannot expand ", show(value), ": $HOME is not set"));
            std::filesystem::path p(home);
            if (s.size() > 2) p /= s.substr(2);
            return p;
        }
        std::filesystem::path p(s);
        if (!p.is_absolute())
            fail(line, key_ctx(ctx, "local_root"),
                 cat("expected an absolute path (or one starting with ~/), got ", show(value),
                     s.rfind("~", 0) == 0 ? "; only ~/ (your own home) is expanded" : ""));
        return p;
    }

    CollectionFilter read_filter(const Json& v, const std::string& ptr, int line, const std::string& ctx) const {
        if (!v.is_object())
            fail(line, key_ctx(ctx, "collections"),
                 cat("expected an object like {\"include\": [...], \"exclude\": [...]}, got ", kind(v)));
        std::string cctx = key_ctx(ctx, "collections");
        check_duplicates(ptr, cctx);
        CollectionFilter f;
        for (const auto& [key, value] : v.items()) {
            std::string kptr = child(ptr, key);
            int kline = pos_.at(kptr);
            std::vector<std::string>* list = nullptr;
            if (key == "include") list = &f.include;
            else if (key == "exclude") list = &f.exclude;
            else unknown_key(kline, cctx, key, {"include", "exclude"}, "");
            std::string name = cat("collections.", key);
            if (!value.is_array())
                fail(kline, key_ctx(ctx, name), cat("expected an array of collection ids or names, got ", kind(value)));
            for (std::size_t i = 0; i < value.size(); ++i) {
                int eline = pos_.at(child(kptr, i));
                if (!value[i].is_string())
                    fail(eline ? eline : kline, key_ctx(ctx, name),
                         cat("expected a collection id or name (a string), got ", show(value[i])));
                if (value[i].get_ref<const std::string&>().empty())
                    fail(eline ? eline : kline, key_ctx(ctx, name), "collection ids and names must not be empty");
                list->push_back(value[i].get<std::string>());
            }
        }
        return f;
    }

    // Every account needs a folder of its own: a shared or nested local_root
    // would put one account's collections into another's.
    void check_roots() const {
        const auto& accs = cfg_.accounts;
        for (std::size_t j = 1; j < accs.size(); ++j) {
            for (std::size_t i = 0; i < j; ++i) {
                const auto& a = accs[i].local_root;
                const auto& b = accs[j].local_root;
                std::string ctx = cat("account '", accs[j].id, "': ");
                std::string how = explicit_roots_[j] ? "" : " (the default, data_dir/<id>)";
                if (a == b)
                    fail(root_lines_[j], key_ctx(ctx, "local_root"),
                         cat(b.string(), how, " is also the local_root of account '", accs[i].id,
                             "'; each account needs its own folder"));
                if (fs::is_inside(a, b))
                    fail(root_lines_[j], key_ctx(ctx, "local_root"),
                         cat(b.string(), how, " lies inside ", a.string(), ", the local_root of account '",
                             accs[i].id, "'; each account needs its own folder"));
                if (fs::is_inside(b, a))
                    fail(root_lines_[j], key_ctx(ctx, "local_root"),
                         cat(b.string(), how, " contains ", a.string(), ", the local_root of account '", accs[i].id,
                             "'; each account needs its own folder"));
            }
        }
    }

    std::string_view text_;
    const std::filesystem::path& source_;
    Positions pos_;
    Config cfg_;
    std::vector<int> account_lines_;
    std::vector<int> root_lines_;
    std::vector<bool> explicit_roots_;
};

}  // namespace

bool CollectionFilter::accepts(const std::string& id, const std::string& display_name) const {
    auto matches = [&](const std::vector<std::string>& patterns) {
        return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) {
            return p == id || (!display_name.empty() && p == display_name);
        });
    };
    if (matches(exclude)) return false;
    return include.empty() || matches(include);
}

std::filesystem::path default_path(const fs::XdgDirs& xdg) { return xdg.config_home / "davsyncd" / "config.json"; }

Config parse(std::string_view text, const std::filesystem::path& source_name, const fs::XdgDirs& xdg) {
    return Reader(text, source_name, xdg).run();
}

Config load(const std::filesystem::path& path, const fs::XdgDirs& xdg) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR)
            throw ConfigError(cat(path.string(), " does not exist; create it from the example (mkdir -p ",
                                  path.parent_path().string(), " && cp ", kExample, " ", path.string(),
                                  ", then edit it) or use --config FILE to read another file"));
        throw ConfigError(cat("cannot read ", path.string(), ": ", std::strerror(err)));
    }
    std::string text;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            ::close(fd);
            throw ConfigError(cat("cannot read ", path.string(), ": ", std::strerror(err)));
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > kMaxFileSize) {
            ::close(fd);
            throw ConfigError(cat("cannot read ", path.string(), ": larger than ", kMaxFileSize / (1024 * 1024),
                                  " MiB; this is not a davsyncd configuration"));
        }
    }
    ::close(fd);
    return parse(text, path, xdg);
}

namespace {

// Owns the attributes of posix_spawn for one password_command.
struct SpawnSetup {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    SpawnSetup() {
        posix_spawn_file_actions_init(&actions);
        posix_spawnattr_init(&attr);
    }
    ~SpawnSetup() {
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
    }
    SpawnSetup(const SpawnSetup&) = delete;
    SpawnSetup& operator=(const SpawnSetup&) = delete;
};

bool is_set(const std::atomic<bool>* flag) { return flag && flag->load(std::memory_order_relaxed); }

}  // namespace

PasswordSource password_source(const Account& account) {
    if (account.password) return PasswordSource::inline_password;
    if (account.password_command) return PasswordSource::command;
    if (!account.secret.empty() || !account.username.empty()) return PasswordSource::secret_service;
    return PasswordSource::none;
}

std::map<std::string, std::string> secret_attributes(const Account& account) {
    if (!account.secret.empty()) return account.secret;
    return {{"application", "davsyncd"}, {"account", account.id}};
}

SecretString resolve_password(const Account& account, std::chrono::milliseconds timeout, const std::atomic<bool>* cancel) {
    if (!account.password_command) return account.password.value_or(SecretString());
    auto failed = [&](const std::string& why) {
        return ConfigError(cat("account '", account.id, "': password_command failed (", why, ")"));
    };
    auto cancelled = [&] { return dav::Cancelled(cat("account '", account.id, "': password_command cancelled")); };
    if (is_set(cancel)) throw cancelled();

    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        throw ConfigError(cat("account '", account.id, "': cannot run password_command: ", std::strerror(errno)));
    fs::Fd output(fds[0]), write_end(fds[1]);
    SpawnSetup spawn;
    posix_spawn_file_actions_adddup2(&spawn.actions, write_end.get(), STDOUT_FILENO);  // dup2 clears O_CLOEXEC
    // Its own process group, so that a timeout kills the whole pipeline.
    // No blocked signals and default actions: the daemon's threads block
    // SIGTERM/SIGINT/SIGHUP for its signalfd, and a password manager that
    // inherited that mask could not be stopped, nor could its children.
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setflags(&spawn.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&spawn.attr, 0);
    posix_spawnattr_setsigmask(&spawn.attr, &none);
    posix_spawnattr_setsigdefault(&spawn.attr, &all);
    const std::string& cmd = *account.password_command;
    char sh[] = "sh", dash_c[] = "-c";
    char* argv[] = {sh, dash_c, const_cast<char*>(cmd.c_str()), nullptr};
    pid_t pid = -1;
    int rc = posix_spawn(&pid, "/bin/sh", &spawn.actions, &spawn.attr, argv, environ);
    write_end.reset();
    if (rc != 0) throw ConfigError(cat("account '", account.id, "': cannot run password_command: ", std::strerror(rc)));
    // Readable when the shell has exited, so that one that closed its
    // output but runs on is bound by the deadline too. Without pidfds
    // (Linux < 5.3) the exit is awaited after the output ends.
    // (The raw call: glibc 2.36's <sys/pidfd.h> lacks extern "C".)
    fs::Fd exit_fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

    // Read everything (so the command never dies of SIGPIPE), keep the
    // first line, until the output ends and the shell has exited, the
    // deadline passes or the flag says stop. With a flag the wait is cut in
    // slices to look at it; without, one poll sleeps until something happens.
    constexpr std::chrono::milliseconds kCancelSlice{100};
    enum class Stop { finished, timed_out, cancelled } stop = Stop::finished;
    char buf[4096];
    std::string out;
    // Room for the longest line kept, so that growing never leaves a copy
    // of the password in a freed buffer.
    out.reserve(65536 + sizeof buf);
    bool line_done = false;
    bool output_ended = false;
    bool exited = !exit_fd.valid();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!output_ended || !exited) {
        if (is_set(cancel)) {
            stop = Stop::cancelled;
            break;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            stop = Stop::timed_out;
            break;
        }
        auto wait = cancel ? std::min(left, kCancelSlice) : left;
        pollfd pfd[2] = {{output_ended ? -1 : output.get(), POLLIN, 0}, {exited ? -1 : exit_fd.get(), POLLIN, 0}};
        int ready = ::poll(pfd, 2, static_cast<int>(std::min<std::int64_t>(wait.count(), std::numeric_limits<int>::max())));
        if (ready <= 0) continue;  // a slice ended, or EINTR
        if (pfd[1].revents) exited = true;
        if (!pfd[0].revents) continue;
        ssize_t n = ::read(output.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            output_ended = true;
            continue;
        }
        if (!line_done) {
            std::string_view chunk(buf, static_cast<std::size_t>(n));
            auto nl = chunk.find('\n');
            out.append(chunk.substr(0, nl));
            if (nl != std::string_view::npos || out.size() > 65536) line_done = true;
        }
    }
    explicit_bzero(buf, sizeof buf);
    output.reset();
    if (stop != Stop::finished) ::kill(-pid, SIGKILL);

    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!out.empty() && out.back() == '\r') out.pop_back();

    std::string failure;
    if (stop == Stop::cancelled) {
        SecretString::wipe(out);
        throw cancelled();
    }
    if (stop == Stop::timed_out) failure = cat("did not finish within ", timeout.count() / 1000.0, " s; stopped it");
    else if (WIFSIGNALED(status)) failure = cat("killed by signal ", WTERMSIG(status));
    else if (!WIFEXITED(status)) failure = "did not exit normally";
    else if (WEXITSTATUS(status) != 0) failure = cat("exit status ", WEXITSTATUS(status));
    else if (out.empty()) failure = "exit status 0, but it printed no password";
    if (!failure.empty()) {
        SecretString::wipe(out);
        throw failed(failure);
    }
    return SecretString(std::move(out));
}

const char* to_string(ConflictPolicy p) {
    switch (p) {
    case ConflictPolicy::server_wins: return "server-wins";
    case ConflictPolicy::local_wins: return "local-wins";
    case ConflictPolicy::newest: return "newest";
    }
    return "unknown";
}

}  // namespace davsyncd::config
