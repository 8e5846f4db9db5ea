#!/usr/bin/env bash
# Fetch the data version this checkout records from the team's DVC remote on MinIO (S3).
#
#   bash infra/scripts/dvc-pull.sh                 # data.dvc (the raw data)
#   bash infra/scripts/dvc-pull.sh data.dvc dvc.yaml
#
# Environment: DVC_S3_ENDPOINT_URL (e.g. http://minio:9000), AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY (the stack's S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY);
# optional DVC_REMOTE (default minio) and DVC_BUCKET (default dvc). A remote of that name
# in .dvc/config is used as it is; otherwise one is added to .dvc/config.local, which is
# never committed. Needs dvc[s3] (the project image has it).
set -euo pipefail

remote="${DVC_REMOTE:-minio}"
bucket="${DVC_BUCKET:-dvc}"

if [ "$#" -eq 0 ]; then
  set -- data.dvc
fi

# The image carries no .git: let DVC run without an SCM there.
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  dvc config --local core.no_scm true
fi

if ! dvc remote list | awk '{print $1}' | grep -qx "$remote"; then
  dvc remote add --local "$remote" "s3://${bucket}"
fi
if [ -n "${DVC_S3_ENDPOINT_URL:-}" ]; then
  dvc remote modify --local "$remote" endpointurl "$DVC_S3_ENDPOINT_URL"
fi

echo "dvc pull from remote '$remote': $*"
dvc pull --remote "$remote" "$@"
