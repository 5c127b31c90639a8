# Sourced by umbrelOS (never executed), with `set -euo pipefail`, before Sovereign or an
# app that depends on it starts. It only sets variables: no exit, no cd, no shell options.

export APP_SOVEREIGN_PORT="3410"

# Redis's own password, derived from the device seed. It is not APP_PASSWORD, which
# Umbrel shows the owner as the setup secret: knowing that must not open the task queue.
# app_entropy_identifier is the app being started; for an app that depends on Sovereign
# this derives a different value, so Sovereign's password never reaches another app.
# Assigned before export: `export X=$(...)` would hide a failure from `set -e` and leave
# Redis with an empty password.
APP_SOVEREIGN_REDIS_PASSWORD=$(derive_entropy "${app_entropy_identifier}-redis")
export APP_SOVEREIGN_REDIS_PASSWORD

# http://<ip>:<port> for each address of the device, comma-separated: the origins a
# browser on the local network uses, trusted by the web service for CSRF checks.
sovereign_local_ips=$(hostname --all-ip-addresses 2> /dev/null) || sovereign_local_ips=""
sovereign_local_urls=""
for sovereign_ip in ${sovereign_local_ips}; do
  if [[ "${sovereign_ip}" == *:* ]]; then
    sovereign_ip="[${sovereign_ip}]"
  fi
  sovereign_local_urls="${sovereign_local_urls:+${sovereign_local_urls},}http://${sovereign_ip}:${APP_SOVEREIGN_PORT}"
done
export APP_SOVEREIGN_LOCAL_URLS="${sovereign_local_urls}"
unset sovereign_local_ips sovereign_local_urls sovereign_ip
