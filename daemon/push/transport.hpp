// How push messages reach davsyncd, whichever way they travel: a UnifiedPush
// distributor on the session bus (Connector) or davsyncd's own receiver of
// an ntfy server's stream (NtfyReceiver). The daemon and the accounts talk
// to "a transport" through this interface and the same Handlers, so the
// message path after it (decryption, parsing, token comparison,
// coalescing) is one and the same.
//
// Thread affinity: main loop only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace davsyncd::push {

class Transport {
public:
    struct Handlers {
        std::function<void(const std::string& token, const std::string& endpoint)> new_endpoint;
        std::function<void(const std::string& token, const std::vector<uint8_t>& message)> message;
        // The registration is gone or unusable for now: Unregistered, a
        // refused Register, the distributor left the bus, the stream could
        // not be held. `why` is for the log and D-Bus.
        std::function<void(const std::string& token, const std::string& why)> lost;
        // What transport() says changed.
        std::function<void(const std::string& transport)> distributor_changed;
    };

    // One account's registration. `state_dir` is the account's state
    // folder, where a transport keeps what it must remember (the ntfy
    // topic); a distributor keeps nothing.
    struct Registration {
        std::string token;
        std::string description;
        std::string vapid;
        std::filesystem::path state_dir;
    };

    virtual ~Transport() = default;
    // Registers (or re-registers, e.g. with a new VAPID key) a token.
    virtual void add(const Registration& registration) = 0;
    // Unregisters a token and forgets it.
    virtual void remove(const std::string& token) = 0;
    // What carries pushes right now, for D-Bus and davsyncctl:
    // "unifiedpush:<distributor name>", "ntfy:<origin>", or "" when nothing
    // does (no distributor on the bus, the stream is down).
    virtual std::string transport() const = 0;
    // Drops the connection and makes a new one now (after a resume from
    // suspend, when the old one is likely dead). A distributor has no
    // connection of ours: no-op.
    virtual void reconnect() {}
};

}  // namespace davsyncd::push
