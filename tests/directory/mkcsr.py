#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""mkcsr.py OUT.csr CN O [EMAIL]: a certificate request with exactly these subject values
(UTF8String; in an ASCII argument, Python escapes such as \\u202e or \\x07 are decoded), for tests that need
certificates with hostile or Vietnamese names signed by the demo CA's key in the HSM."""
import sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def text(arg):
    # Escapes only in ASCII arguments; others are taken as they are (UTF-8).
    return arg.encode("ascii").decode("unicode_escape") if arg.isascii() and "\\" in arg else arg


key = ec.generate_private_key(ec.SECP256R1())
attrs = [x509.NameAttribute(NameOID.COMMON_NAME, text(sys.argv[2])),
         x509.NameAttribute(NameOID.ORGANIZATION_NAME, text(sys.argv[3]))]
if len(sys.argv) > 4:
    attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, sys.argv[4]))
csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(
    key, hashes.SHA256())
open(sys.argv[1], "wb").write(csr.public_bytes(serialization.Encoding.PEM))
