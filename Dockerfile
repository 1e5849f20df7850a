# The concentrator as a container: a static binary on an empty image.
# Run it with NET_ADMIN (TUN, routes, nftables) and /dev/net/tun:
#   docker run -d --name braid --cap-add NET_ADMIN --device /dev/net/tun \
#     --sysctl net.ipv4.ip_forward=1 --sysctl net.ipv6.conf.all.forwarding=1 \
#     -p 4443:4443/udp -v /etc/braid:/etc/braid:ro -v braid-state:/var/lib/braid braid
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/braid ./cmd/braid

FROM scratch
COPY --from=build /out/braid /braid
VOLUME /var/lib/braid
EXPOSE 4443/udp
ENTRYPOINT ["/braid"]
CMD ["concentrator", "--config", "/etc/braid/concentrator.yaml"]
