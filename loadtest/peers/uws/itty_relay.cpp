// uws-itty-relay: enough of the itty-sockets protocol (docs/PROTOCOL.md)
// for the generator's `--proto itty` wire, on uWebSockets: what an engineer
// would write to build an itty relay by hand.
//
// - `GET /c/<channel>[?as=|alias=&announce=true&echo=true]` joins; the
//   joiner's own join event (uid, alias, `self`, total, date) is its first
//   frame; the other members get a join event (uid/alias when announced).
// - A text frame is relayed in an envelope built once per message,
//   `{"id":..,"uid":..[,"alias":..],"date":..,"message":<payload>}`, and
//   published to the channel: every other member gets it (the sender too
//   with `echo=true`).
// - A leave event goes to the remaining members when a connection ends.
//
// Left out, and so work this relay does not do that itty-relay does: the
// JSON check of a message (a payload is embedded as it came), rate limits,
// keys, direct messages, `list`, permessage-deflate, metrics, several
// shards. Binary frames and `\x1F`/`@@` direct messages get an error event,
// as in itty-relay.
#include "common.h"

#include <cstdint>
#include <ctime>

namespace {

constexpr char kBase62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr uint64_t kUidSpace = 56800235584ULL;  // 62^6
constexpr size_t kAliasBytesMax = 64;           // PROTOCOL.md, section 2

struct Member {
    std::string channel;
    char uid[6];
    // `"alias":"<escaped>",` ready to copy into events and envelopes, or "".
    std::string alias_field;
    bool announce;
    bool echo;
};

uint64_t now_ms() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

void append_u64(std::string &out, uint64_t v) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = char('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) out.push_back(digits[--n]);
}

void append_base62(std::string &out, uint64_t v) {
    char digits[11];
    int n = 0;
    do {
        digits[n++] = kBase62[v % 62];
        v /= 62;
    } while (v);
    while (n) out.push_back(digits[--n]);
}

// A JSON string body: quotes, backslashes and control characters escaped.
void append_json_escaped(std::string &out, std::string_view s) {
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(char(c));
        } else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            out += "\\u00";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        } else {
            out.push_back(char(c));
        }
    }
}

// A fresh uid: a counter through a bijection of [0, 62^6) (an odd multiplier
// coprime with 31, and an offset drawn at start), so uids are not reused
// while the relay runs and do not count up visibly.
void next_uid(char out[6]) {
    static uint64_t counter = 0;
    static const uint64_t offset = uint64_t(std::time(nullptr)) * 2654435761ULL % kUidSpace;
    uint64_t v = (counter++ * 1000003ULL + offset) % kUidSpace;
    for (int i = 5; i >= 0; i--) {
        out[i] = kBase62[v % 62];
        v /= 62;
    }
}

// `{"type":"join"|"leave",["uid":..,alias,]["self":true,]"total":N,"date":D}`
std::string event(const char *type, const Member &m, bool with_identity, bool self, unsigned total) {
    std::string e = "{\"type\":\"";
    e += type;
    e += '"';
    if (with_identity) {
        e += ",\"uid\":\"";
        e.append(m.uid, 6);
        e += '"';
        if (!m.alias_field.empty()) {
            e += ',';
            e.append(m.alias_field, 0, m.alias_field.size() - 1);
        }
    }
    if (self) e += ",\"self\":true";
    e += ",\"total\":";
    append_u64(e, total);
    e += ",\"date\":";
    append_u64(e, now_ms());
    e += '}';
    return e;
}

std::string error_event(const char *message) {
    std::string e = "{\"type\":\"error\",\"message\":\"";
    e += message;
    e += "\",\"date\":";
    append_u64(e, now_ms());
    e += '}';
    return e;
}

} // namespace

int main(int argc, char **argv) {
    relay::Listen at = relay::parse_args(argc, argv, "itty-sockets at ws://HOST:PORT/c/<channel>\n");
    uWS::App app;
    uint64_t message_count = 0;
    // The envelope under construction; one buffer, reused for every message.
    std::string envelope;
    envelope.reserve(relay::kMessageBytesMax + 256);

    app.ws<Member>("/*", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = relay::kMessageBytesMax,
        .idleTimeout = relay::kIdleTimeoutS,
        .maxBackpressure = relay::kOutgoingQueueBytesMax,
        .closeOnBackpressureLimit = true,
        .upgrade = [](auto *res, auto *req, auto *context) {
            Member m{std::string(relay::channel_of(req->getUrl())), {}, {}, false, false};
            std::string_view as = req->getQuery("as");
            std::string_view alias = as.data() ? as : req->getQuery("alias");
            if (alias.size() > kAliasBytesMax) {
                res->writeStatus("400 Bad Request")->end("alias is longer than 64 bytes");
                return;
            }
            if (!alias.empty()) {
                m.alias_field = "\"alias\":\"";
                append_json_escaped(m.alias_field, alias);
                m.alias_field += "\",";
            }
            m.announce = req->getQuery("announce") == "true";
            m.echo = req->getQuery("echo") == "true";
            next_uid(m.uid);
            res->template upgrade<Member>(std::move(m),
                                          req->getHeader("sec-websocket-key"),
                                          req->getHeader("sec-websocket-protocol"),
                                          req->getHeader("sec-websocket-extensions"),
                                          context);
        },
        .open = [&app](auto *ws) {
            Member &m = *ws->getUserData();
            ws->subscribe(m.channel);
            unsigned total = app.numSubscribers(m.channel);
            // The others first (the joiner is excluded from its own publish),
            // then the joiner's own join: its first frame.
            if (total > 1) ws->publish(m.channel, event("join", m, m.announce, false, total), uWS::OpCode::TEXT);
            ws->send(event("join", m, true, true, total), uWS::OpCode::TEXT);
        },
        .message = [&app, &message_count, &envelope](auto *ws, std::string_view message, uWS::OpCode opcode) {
            Member &m = *ws->getUserData();
            if (opcode != uWS::OpCode::TEXT) {
                ws->send(error_event("binary frames are not supported"), uWS::OpCode::TEXT);
                return;
            }
            if (!message.empty() && (message[0] == '\x1f' || message[0] == '@')) {
                ws->send(error_event("direct messages are not supported by this relay"), uWS::OpCode::TEXT);
                return;
            }
            envelope.clear();
            envelope += "{\"id\":\"";
            append_base62(envelope, message_count++);
            envelope += "\",\"uid\":\"";
            envelope.append(m.uid, 6);
            envelope += "\",";
            envelope += m.alias_field;
            envelope += "\"date\":";
            append_u64(envelope, now_ms());
            envelope += ",\"message\":";
            envelope += message;
            envelope += '}';
            if (m.echo) {
                app.publish(m.channel, envelope, uWS::OpCode::TEXT);
            } else {
                ws->publish(m.channel, envelope, uWS::OpCode::TEXT);
            }
        },
        .close = [&app](auto *ws, int, std::string_view) {
            // Called after the connection left its channel: total excludes it.
            Member &m = *ws->getUserData();
            unsigned total = app.numSubscribers(m.channel);
            if (total > 0) app.publish(m.channel, event("leave", m, m.announce, false, total), uWS::OpCode::TEXT);
        },
    });
    app.listen(at.host, at.port, [&](auto *listen_socket) {
        if (!listen_socket) {
            std::fprintf(stderr, "uws-itty-relay: cannot listen on %s:%d\n", at.host.c_str(), at.port);
            std::exit(1);
        }
        std::fprintf(stderr, "uws-itty-relay: listening on %s:%d\n", at.host.c_str(), at.port);
    });
    app.run();
}
