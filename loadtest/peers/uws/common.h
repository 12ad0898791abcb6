// What both uWebSockets relays share: the command line, the limits (set to
// match itty-relay's defaults, so that neither side is let off work the
// other does), and the channel name from the upgrade's path.
//
// One thread, one event loop (uSockets' epoll loop): the same share of the
// machine as one shard of itty-relay. Pinning is left to `taskset`
// (loadtest/peers/start.sh). Never prints per connection or per message.
#pragma once

#include "App.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace relay {

// Largest message read from a client: itty-relay's `message_bytes_max`
// (100 KiB). Bigger frames close the connection (1009), as ours does.
constexpr unsigned kMessageBytesMax = 100 * 1024;
// Bytes queued to one connection before it is cut as a slow consumer:
// itty-relay's `outgoing_queue_bytes_max` (1 MiB), with the same policy
// (close, never drop silently: uWebSockets' default would skip messages).
constexpr unsigned kOutgoingQueueBytesMax = 1024 * 1024;
// Silence before a ping, then a close (uWebSockets pings at about half of
// it). itty-relay drops after 75 s of silence.
constexpr unsigned short kIdleTimeoutS = 75;

struct Listen {
    std::string host;
    int port;
};

// `PROGRAM HOST:PORT` (the only argument).
inline Listen parse_args(int argc, char **argv, const char *usage) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s HOST:PORT\n%s", argv[0], usage);
        std::exit(2);
    }
    std::string_view arg = argv[1];
    auto colon = arg.rfind(':');
    int port = colon == std::string_view::npos ? 0 : std::atoi(argv[1] + colon + 1);
    if (colon == std::string_view::npos || port <= 0 || port > 65535) {
        std::fprintf(stderr, "%s: bad HOST:PORT '%s'\n", argv[0], argv[1]);
        std::exit(2);
    }
    return {std::string(arg.substr(0, colon)), port};
}

// The channel of `/c/<channel>`; any other path is a channel of its own
// name (the generator only uses `/c/`).
inline std::string_view channel_of(std::string_view url) {
    constexpr std::string_view prefix = "/c/";
    if (url.substr(0, prefix.size()) == prefix) {
        url.remove_prefix(prefix.size());
    }
    return url;
}

} // namespace relay
