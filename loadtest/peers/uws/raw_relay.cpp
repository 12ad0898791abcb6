// uws-raw-relay: plain pub/sub over one WebSocket, as the generator's
// `--proto nchan` wire reads it (loadtest/peers/PROTOCOLS.md, nchan): a
// connection to `/c/<channel>` is subscribed before its `101` goes out,
// nothing is sent on join, and every data frame a client sends is published
// to the channel's other members byte for byte, in a frame of the same
// opcode. The sender does not get its own message back (nchan does; the
// wire skips such echoes by publisher id either way).
//
// Nothing is parsed or checked in a message: this is the floor of what a
// relay on uWebSockets does per message.
#include "common.h"

struct Member {
    std::string channel;
};

int main(int argc, char **argv) {
    relay::Listen at = relay::parse_args(argc, argv, "plain pub/sub at ws://HOST:PORT/c/<channel>\n");
    uWS::App()
        .ws<Member>("/*", {
            .compression = uWS::DISABLED,
            .maxPayloadLength = relay::kMessageBytesMax,
            .idleTimeout = relay::kIdleTimeoutS,
            .maxBackpressure = relay::kOutgoingQueueBytesMax,
            .closeOnBackpressureLimit = true,
            .upgrade = [](auto *res, auto *req, auto *context) {
                res->template upgrade<Member>({std::string(relay::channel_of(req->getUrl()))},
                                              req->getHeader("sec-websocket-key"),
                                              req->getHeader("sec-websocket-protocol"),
                                              req->getHeader("sec-websocket-extensions"),
                                              context);
            },
            .open = [](auto *ws) { ws->subscribe(ws->getUserData()->channel); },
            .message = [](auto *ws, std::string_view message, uWS::OpCode opcode) {
                ws->publish(ws->getUserData()->channel, message, opcode);
            },
        })
        .listen(at.host, at.port, [&](auto *listen_socket) {
            if (!listen_socket) {
                std::fprintf(stderr, "uws-raw-relay: cannot listen on %s:%d\n", at.host.c_str(), at.port);
                std::exit(1);
            }
            std::fprintf(stderr, "uws-raw-relay: listening on %s:%d\n", at.host.c_str(), at.port);
        })
        .run();
}
