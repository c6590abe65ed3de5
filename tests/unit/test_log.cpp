#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <string>

#include "capture.hpp"
#include "core/log.hpp"

using namespace davsyncd;

TEST_SUITE("log") {

TEST_CASE("journal_fields: message and priority, then only the context parts that are set") {
    auto plain = log::journal_fields(log::Level::warning, "a/b: something", {});
    CHECK(plain == std::vector<std::string>{"MESSAGE=a/b: something", "PRIORITY=4"});

    auto full = log::journal_fields(log::Level::info, "personal/work: 3 down",
                                    {"personal", "work", log::message::sync_done});
    CHECK(full == std::vector<std::string>{"MESSAGE=personal/work: 3 down", "PRIORITY=6", "ACCOUNT=personal",
                                           "COLLECTION=work", "MESSAGE_ID=e3df0c8ede5742dcbfb5ee4b26b337e6"});

    auto account_only = log::journal_fields(log::Level::error, "x", {"personal", {}, log::message::push_lost});
    CHECK(account_only.size() == 4);
    CHECK(account_only[2] == "ACCOUNT=personal");
    CHECK(account_only[3].starts_with("MESSAGE_ID="));
}

TEST_CASE("journal_fields: server text cannot add lines or fields") {
    auto f = log::journal_fields(log::Level::warning, "line one\nPRIORITY=0\x1b[2J", {"acc", "co\nl", {}});
    for (const auto& field : f) CHECK(field.find_first_of("\n\x1b") == std::string::npos);
    CHECK(f[1] == "PRIORITY=4");
}

TEST_CASE("message ids: 32 lowercase hex digits, all different") {
    std::set<std::string_view> seen;
    for (auto id : {log::message::sync_done, log::message::sync_failed, log::message::conflict,
                    log::message::upload_refused, log::message::deletion_refused, log::message::push_lost}) {
        CHECK(id.size() == 32);
        CHECK(id.find_first_not_of("0123456789abcdef") == std::string_view::npos);
        CHECK(seen.insert(id).second);
    }
}

TEST_CASE("is_journal_stream: true only for the very file $JOURNAL_STREAM names") {
    int fds[2];  // a socket, as journald's stream is; the two ends are two inodes
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    struct stat st {};
    REQUIRE(::fstat(fds[1], &st) == 0);
    auto name = cat(static_cast<unsigned long long>(st.st_dev), ":", static_cast<unsigned long long>(st.st_ino));
    CHECK(log::is_journal_stream(name.c_str(), fds[1]));
    CHECK(log::is_journal_stream(name.c_str(), fds[0]) == false);  // the other end: another inode
    auto other = cat(static_cast<unsigned long long>(st.st_dev), ":", static_cast<unsigned long long>(st.st_ino) + 1);
    CHECK_FALSE(log::is_journal_stream(other.c_str(), fds[1]));
    CHECK_FALSE(log::is_journal_stream(nullptr, fds[1]));
    CHECK_FALSE(log::is_journal_stream("", fds[1]));
    CHECK_FALSE(log::is_journal_stream("12", fds[1]));
    CHECK_FALSE(log::is_journal_stream((name + "x").c_str(), fds[1]));
    CHECK_FALSE(log::is_journal_stream(name.c_str(), -1));
    ::close(fds[0]);
    ::close(fds[1]);
}

TEST_CASE("a line with a context keeps the stderr format") {
    testing::StderrCapture capture;
    log::warning(log::Context{"personal", "work", log::message::conflict}, "personal/work: conflict on a.ics");
    log::warning("personal/work: conflict on a.ics");
    auto text = capture.text();
    CHECK(text == "<4>personal/work: conflict on a.ics\n<4>personal/work: conflict on a.ics\n");
}

}
