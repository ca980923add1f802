# The Flotilla edge node: one static binary on an empty filesystem.
# Built by `cargo xtask build` from a context holding only the binary (and an empty `data`
# folder the node does not use); nothing is pulled. Run by `cargo xtask up`, which adds
# --read-only, --cap-drop=ALL, no-new-privileges, a memory limit and the /certs mount.
FROM scratch
COPY flotilla-node /flotilla-node
# A numeric, unprivileged user: there is no /etc/passwd to name one.
USER 65532:65532
EXPOSE 7000/udp 9100/tcp
# Exec form: the node is PID 1 and handles SIGTERM itself.
ENTRYPOINT ["/flotilla-node"]
CMD ["serve"]
