#include "sync/sync_state.hpp"

#include "core/utf8.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <system_error>

#include "core/fs.hpp"
#include "core/log.hpp"
#include "dav/url.hpp"

namespace davsyncd::sync {
namespace {

using nlohmann::json;

constexpr uint64_t kVersion = 1;

// Reads the state file in one streaming pass (nlohmann's SAX interface):
// building a json DOM first costs several times more, and a collection may
// hold tens of thousands of items. Anything not of the expected shape stops
// the parse with a message in `problem`. Unknown members are skipped, so a
// later version may add fields.
class StateReader {
public:
    using number_integer_t = json::number_integer_t;
    using number_unsigned_t = json::number_unsigned_t;
    using number_float_t = json::number_float_t;
    using string_t = json::string_t;
    using binary_t = json::binary_t;

    CollectionState state;
    std::string problem;

    // Whether the whole document had the required members.
    bool complete() {
        if (level_ != Level::done || (seen_ & kRootAll) != kRootAll) return fail("missing top-level members");
        return true;
    }

    bool null() { return scalar(Scalar::other); }
    bool boolean(bool) { return scalar(Scalar::other); }
    bool number_integer(number_integer_t v) {
        int_ = v;
        return scalar(Scalar::integer);
    }
    bool number_unsigned(number_unsigned_t v) {
        uint_ = v;
        return scalar(Scalar::unsigned_integer);
    }
    bool number_float(number_float_t, const string_t&) { return scalar(Scalar::other); }
    bool binary(binary_t&) { return scalar(Scalar::other); }
    bool string(string_t& v) {
        str_ = &v;
        return scalar(Scalar::string);
    }

    bool start_object(std::size_t) { return container(true); }
    bool start_array(std::size_t) { return container(false); }
    bool end_array() { return end_container(); }
    bool end_object() {
        if (skip_ > 0) return end_container();
        if (level_ == Level::item) {
            if ((item_seen_ & kItemAll) != kItemAll) return fail(cat("item \"", item_key_, "\" lacks members"));
            // Recompute the key from the href: a percent-decoded key need not
            // be valid UTF-8 and may not have survived the JSON round trip.
            std::string k = item_.href.empty() ? std::move(item_key_) : href_key(item_.href);
            state.items.insert_or_assign(std::move(k), std::move(item_));
            item_ = ItemState{};
            level_ = Level::items;
        } else if (level_ == Level::items) {
            seen_ |= kItems;
            level_ = Level::root;
        } else if (level_ == Level::root) {
            level_ = Level::done;
        }
        return true;
    }

    bool key(string_t& k) {
        if (skip_ > 0) return true;
        if (level_ == Level::items) item_key_ = std::move(k);
        else field_ = std::move(k);
        return true;
    }

    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
        if (problem.empty()) problem = e.what();
        return false;
    }

private:
    enum class Level { start, root, items, item, done };
    enum class Scalar { string, integer, unsigned_integer, other };

    static constexpr unsigned kVersionSeen = 1, kUrl = 2, kToken = 4, kCtag = 8, kItems = 16;
    static constexpr unsigned kRootAll = kVersionSeen | kUrl | kToken | kCtag | kItems;
    static constexpr unsigned kHref = 1, kEtag = 2, kFile = 4, kHash = 8, kMtime = 16, kSize = 32;
    static constexpr unsigned kItemAll = kHref | kEtag | kFile | kHash | kMtime | kSize;

    bool fail(std::string what) {
        problem = std::move(what);
        return false;
    }

    bool container(bool object) {
        if (skip_ > 0) {
            ++skip_;
            return true;
        }
        switch (level_) {
        case Level::start:
            if (!object) return fail("not an object");
            level_ = Level::root;
            return true;
        case Level::root:
            if (field_ == "items") {
                if (!object || (seen_ & kItems)) return fail("\"items\" is not an object");
                level_ = Level::items;
                return true;
            }
            if (is_root_field()) return fail(cat("\"", field_, "\" has the wrong type"));
            skip_ = 1;
            return true;
        case Level::items:
            if (!object) return fail(cat("item \"", item_key_, "\" is not an object"));
            level_ = Level::item;
            item_seen_ = 0;
            return true;
        case Level::item:
            if (is_item_field()) return fail(cat("item \"", item_key_, "\" has a bad \"", field_, "\""));
            skip_ = 1;
            return true;
        case Level::done:
            break;
        }
        return fail("unexpected content");
    }

    bool end_container() {
        if (skip_ > 0) --skip_;
        return true;
    }

    bool is_root_field() const {
        return field_ == "version" || field_ == "collection_url" || field_ == "token" || field_ == "ctag";
    }
    bool is_item_field() const {
        return field_ == "href" || field_ == "etag" || field_ == "file" || field_ == "hash" ||
               field_ == "mtime_ns" || field_ == "size" || field_ == "ctime_ns";
    }

    bool scalar(Scalar kind) {
        if (skip_ > 0) return true;
        if (level_ == Level::root) return root_scalar(kind);
        if (level_ == Level::item) return item_scalar(kind);
        if (level_ == Level::items) return fail(cat("item \"", item_key_, "\" is not an object"));
        return fail("not an object");
    }

    bool root_scalar(Scalar kind) {
        if (field_ == "version") {
            if (kind != Scalar::unsigned_integer || uint_ != kVersion) return fail("unsupported \"version\"");
            seen_ |= kVersionSeen;
        } else if (field_ == "collection_url" || field_ == "token" || field_ == "ctag") {
            if (kind != Scalar::string) return fail(cat("\"", field_, "\" is not a string"));
            if (field_ == "collection_url") {
                state.collection_url = std::move(*str_);
                seen_ |= kUrl;
            } else if (field_ == "token") {
                state.token = SyncToken(std::move(*str_));
                seen_ |= kToken;
            } else {
                state.ctag = CTag(std::move(*str_));
                seen_ |= kCtag;
            }
        } else if (field_ == "items") {
            return fail("\"items\" is not an object");
        }
        return true;  // unknown member: ignored
    }

    bool item_scalar(Scalar kind) {
        auto bad = [&] { return fail(cat("item \"", item_key_, "\" has a bad \"", field_, "\"")); };
        if (field_ == "href" || field_ == "etag" || field_ == "file" || field_ == "hash") {
            if (kind != Scalar::string) return bad();
            if (field_ == "href") {
                item_.href = Href(std::move(*str_));
                item_seen_ |= kHref;
            } else if (field_ == "etag") {
                item_.etag = Etag(std::move(*str_));
                item_seen_ |= kEtag;
            } else if (field_ == "file") {
                item_.file = std::move(*str_);
                item_seen_ |= kFile;
            } else {
                item_.hash = std::move(*str_);
                item_seen_ |= kHash;
            }
        } else if (field_ == "mtime_ns") {
            if (kind == Scalar::integer) item_.mtime_ns = int_;
            else if (kind == Scalar::unsigned_integer && uint_ <= uint64_t(INT64_MAX)) item_.mtime_ns = int64_t(uint_);
            else return bad();
            item_seen_ |= kMtime;
        } else if (field_ == "size") {
            if (kind != Scalar::unsigned_integer) return bad();
            item_.size = uint_;
            item_seen_ |= kSize;
        } else if (field_ == "ctime_ns") {  // optional: older states lack it
            if (kind == Scalar::integer) item_.ctime_ns = int_;
            else if (kind == Scalar::unsigned_integer && uint_ <= uint64_t(INT64_MAX)) item_.ctime_ns = int64_t(uint_);
            else return bad();
        }
        return true;  // unknown member: ignored
    }

    Level level_ = Level::start;
    int skip_ = 0;  // > 0 while inside an ignored value
    unsigned seen_ = 0;
    unsigned item_seen_ = 0;
    std::string field_;
    std::string item_key_;
    ItemState item_;
    std::string* str_ = nullptr;
    int64_t int_ = 0;
    uint64_t uint_ = 0;
};

// Appends `s` as a JSON string. Invalid UTF-8 (an odd server string) becomes
// U+FFFD rather than failing the save or writing a file that cannot be read.
void append_json_string(std::string& out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    out.push_back('"');
    size_t i = 0;
    while (i < s.size()) {
        // Plain ASCII runs are copied in one go.
        size_t run = i;
        while (run < s.size()) {
            unsigned char r = static_cast<unsigned char>(s[run]);
            if (r < 0x20 || r >= 0x80 || r == '"' || r == '\\') break;
            ++run;
        }
        if (run > i) {
            out.append(s.substr(i, run - i));
            i = run;
            continue;
        }
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    out += "\\u00";
                    out.push_back(hex[c >> 4]);
                    out.push_back(hex[c & 0x0f]);
                } else {
                    out.push_back(static_cast<char>(c));
                }
            }
            ++i;
            continue;
        }
        size_t len = utf8::sequence_length(s, i);
        bool ok = len > 0;
        if (ok) {
            out.append(s.substr(i, len));
            i += len;
        } else {
            out += "\\ufffd";
            ++i;
        }
    }
    out.push_back('"');
}

template <typename Int>
void append_number(std::string& out, Int v) {
    char buf[24];
    auto res = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, res.ptr);
}

// "href":..,"etag":..,"file":..,"hash":.. (shared by the state and the journal).
void append_item_fields(std::string& out, const ItemState& item) {
    out += "\"href\":";
    append_json_string(out, item.href.str());
    out += ",\"etag\":";
    append_json_string(out, item.etag.str());
    out += ",\"file\":";
    append_json_string(out, item.file);
    out += ",\"hash\":";
    append_json_string(out, item.hash);
}

}  // namespace

std::string journal_line(const std::string& key, const ItemState& item) {
    std::string out = "{\"key\":";
    append_json_string(out, key);
    out.push_back(',');
    append_item_fields(out, item);
    out += "}\n";
    return out;
}

const ItemState* CollectionState::find_by_file(const std::string& file) const {
    for (const auto& [key, item] : items)
        if (item.file == file) return &item;
    return nullptr;
}

CollectionState CollectionState::load(const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return {};
        throw fs::IoError(cat("cannot stat ", path.string(), ": ", std::strerror(errno)));
    }
    std::string text = fs::read_file(path);  // I/O errors are not corruption: let them through
    StateReader reader;
    bool ok = false;
    try {
        ok = json::sax_parse(text, &reader) && reader.complete();
    } catch (const json::exception& e) {
        reader.problem = e.what();
    }
    if (ok) {
        reader.state.on_disk_ = std::move(text);
        return std::move(reader.state);
    }

    std::string problem = reader.problem.empty() ? std::string("not valid JSON") : reader.problem;
    auto aside = path;
    aside += ".corrupt";
    std::error_code ec;
    std::filesystem::rename(path, aside, ec);
    if (ec)
        log::warning("state file ", path.string(), " is corrupt (", problem, ") and cannot be moved aside: ",
                     ec.message(), "; starting from an empty state");
    else
        log::warning("state file ", path.string(), " is corrupt (", problem, "); moved it to ", aside.string(),
                     " and starting from an empty state");
    return {};
}

void CollectionState::save(const std::filesystem::path& path) const {
    // Written by hand: serialising through a json DOM is several times slower.
    std::string out;
    out.reserve(256 + items.size() * 320);
    out += "{\"version\":";
    append_number(out, kVersion);
    out += ",\"collection_url\":";
    append_json_string(out, collection_url);
    out += ",\"token\":";
    append_json_string(out, token.str());
    out += ",\"ctag\":";
    append_json_string(out, ctag.str());
    out += ",\"items\":{";
    bool first = true;
    for (const auto& [key, item] : items) {
        if (!first) out.push_back(',');
        first = false;
        append_json_string(out, key);
        out += ":{";
        append_item_fields(out, item);
        out += ",\"mtime_ns\":";
        append_number(out, item.mtime_ns);
        out += ",\"size\":";
        append_number(out, item.size);
        out += ",\"ctime_ns\":";
        append_number(out, item.ctime_ns);
        out.push_back('}');
    }
    out += "}}";
    // A sync that changed nothing must not rewrite (and fsync) a file of a
    // few megabytes: that is disk wear and wake-ups for nothing.
    if (out == on_disk_) return;
    if (path.has_parent_path()) fs::make_dirs(path.parent_path(), 0700);
    fs::write_atomic(path, out, 0600);
    on_disk_ = std::move(out);
}

namespace {

std::filesystem::path summary_path(const std::filesystem::path& state_file) {
    return state_file.string() + ".summary";
}

// Which version of the state file a summary was written for.
std::optional<std::string> state_identity(const std::filesystem::path& state_file) {
    struct stat st {};
    if (::stat(state_file.c_str(), &st) != 0) return std::nullopt;
    return cat(st.st_dev, ":", st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
}

}  // namespace

std::optional<StateSummary> StateSummary::load(const std::filesystem::path& state_file) {
    auto identity = state_identity(state_file);
    if (!identity) return std::nullopt;
    std::string text;
    try {
        text = fs::read_file(summary_path(state_file));
    } catch (const std::exception&) {
        return std::nullopt;  // none yet: the full path
    }
    auto j = json::parse(text, nullptr, false);
    if (!j.is_object()) return std::nullopt;
    try {
        if (j.at("state").get<std::string>() != *identity) return std::nullopt;
        StateSummary s;
        s.collection_url = j.at("collection_url").get<std::string>();
        s.token = SyncToken(j.at("token").get<std::string>());
        s.items = j.at("items").get<size_t>();
        s.folder_digest = j.at("folder").get<std::string>();
        return s;
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

void StateSummary::save(const std::filesystem::path& state_file) const {
    auto identity = state_identity(state_file);
    if (!identity) return;
    json j{{"state", *identity}, {"collection_url", collection_url}, {"token", token.str()}, {"items", items},
           {"folder", folder_digest}};
    auto text = j.dump();
    auto path = summary_path(state_file);
    try {
        if (fs::read_file(path) == text) return;
    } catch (const std::exception&) {
    }
    fs::write_atomic(path, text, 0600);
}

std::string href_key(const Href& href) {
    std::string_view s = href.str();
    // An absolute URL ("https://host/path"): keep the path. A path that
    // merely contains "://" further on is left alone.
    if (auto scheme = s.find("://"); scheme != std::string_view::npos && !s.starts_with('/')) {
        auto slash = s.find('/', scheme + 3);
        s = slash == std::string_view::npos ? std::string_view("/") : s.substr(slash);
    }
    return url::percent_decode(s);
}

std::string utc_stamp() {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    return buf;
}

}  // namespace davsyncd::sync
