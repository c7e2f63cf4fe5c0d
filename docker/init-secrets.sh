#!/bin/sh
# Make docker/secrets/, the files compose.yml mounts as Docker secrets. Run it from anywhere, once;
# a rerun keeps every secret that exists and adds only what is missing. Secrets never go in docker/.env.
#
#   sh docker/init-secrets.sh
#
# The folder is mode 700 (no other user of this host may read it); the files inside are 644 because
# compose bind-mounts them into the containers as they are, and the app runs as uid 10001 there.
# Optional secrets (OIDC client secret, outbound webhook key) start empty: write yours into them.
set -eu
dir="${SECRETS_DIR:-$(dirname "$0")/secrets}"
umask 022
mkdir -p "$dir"
chmod 700 "$dir"

random() {
    # 32 random bytes as hex: URL-safe (the database password goes into a URL) and one word (the
    # webhook token is sent as "Bearer <token>")
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

for name in minio_root_password storage_secret_key postgres_password server_secret_key webhook_token \
        metrics_token grafana_admin_password; do
    if [ ! -s "$dir/$name" ]; then
        random > "$dir/$name"
        echo "made $dir/$name"
    fi
done
for name in oidc_client_secret notify_secret; do
    [ -e "$dir/$name" ] || : > "$dir/$name"
done
# the app's database URL carries the PostgreSQL password: made from it, and remade when it changes
url="postgresql://streamforge:$(cat "$dir/postgres_password")@postgres:5432/streamforge"
if [ ! -s "$dir/database_url" ] || [ "$(cat "$dir/database_url")" != "$url" ]; then
    printf '%s' "$url" > "$dir/database_url"
    echo "made $dir/database_url"
fi
chmod 644 "$dir"/*
echo "secrets ready in $dir"
