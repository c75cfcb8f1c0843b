#!/usr/bin/env bash
# Test certificates for TLS listeners: a CA, a server certificate for localhost and 127.0.0.1,
# and a client certificate with CN=client1 (for require_certificate / use_identity_as_username).
# Usage: scripts/certs.sh [DIR]   (default certs/, which git ignores). Needs openssl.
# Never use these in production: the CA key sits next to the certificates.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-certs}"
days=825

command -v openssl >/dev/null 2>&1 || {
    echo "scripts/certs.sh: openssl is missing; install it with: apt-get install openssl" >&2
    exit 1
}
mkdir -p "$dir"
cd "$dir"
umask 077

# P-256 keys: fast handshakes, accepted by every MQTT client library in use.
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" -subj "/CN=ringmq test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem

sign() { # name subject extensions
    local name=$1 subject=$2 extensions=$3
    key "$name-key.pem"
    openssl req -new -key "$name-key.pem" -subj "$subject" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -sha256 -days "$days" -extfile <(printf '%s\n' "$extensions") -out "$name.pem" 2>/dev/null
    rm -f "$name.csr"
}

sign server "/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

sign client "/CN=client1" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

rm -f ca.srl
chmod 600 ./*-key.pem
chmod 644 ca.pem server.pem client.pem
openssl verify -CAfile ca.pem server.pem client.pem >/dev/null
echo "scripts/certs.sh: wrote $(pwd)/{ca,server,client}.pem and their -key.pem files"
