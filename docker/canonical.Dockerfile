# The Flotilla canonical origin: one static binary on an empty filesystem.
# Built by `cargo xtask build` from a context holding only the binary and an empty `data`
# folder; nothing is pulled.
FROM scratch
COPY flotilla-canonical /flotilla-canonical
# An empty /data owned by the unprivileged user: a fresh named volume mounted there takes
# this owner, so the canonical can write its sample images on a read-only root filesystem.
COPY --chown=65532:65532 data /data
USER 65532:65532
EXPOSE 7000/udp 9100/tcp
# Exec form: the canonical is PID 1 and handles SIGTERM itself.
ENTRYPOINT ["/flotilla-canonical"]
