# Shared by both packages' postinst (inlined at build time): the `ganglion`
# system user both units run as.
if ! getent passwd ganglion >/dev/null; then
  adduser --system --group --home /var/lib/ganglion --no-create-home \
    --gecos "Ganglion monitoring" ganglion >/dev/null
fi
