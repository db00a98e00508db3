#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Relying party for test_interop written against Debian's python3-cryptography (38), which
shares no code with pkiva's OpenSSL: fetches OCSP answers, the issuing CA's CRL and a time stamp
from a running pkiva and checks them with cryptography's own parsers and signature code.

usage: crypto_check.py BASE_URL PKI_DIR WORK_DIR ocsp|crl|tsa...

Prints one line per observed outcome (the caller asserts the exact lines):
  ocsp demo-good.pem GOOD                  (and REVOKED key_compromise, REVOKED certificate_hold)
  crl demo-good.pem absent                 (and key_compromise, certificate_hold)
  tsa granted signedData tstInfo sha256 signature-valid
A broken invariant (bad signature, wrong responder, time outside the validity window, wrong
CertID) prints "FAIL <check>: why" and the exit status is 1.

cryptography 38 has no RFC 3161 or CMS SignedData parser: the TimeStampResp is walked with the
small DER reader below, the certificates inside the token come from cryptography's pkcs7 loader
and the CMS signature is verified with cryptography's public keys.
"""
import datetime
import hashlib
import os
import subprocess
import sys
import urllib.request

import cryptography
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

LEAVES = ("demo-good.pem", "demo-revoked.pem", "demo-hold.pem")
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
HASH_OIDS = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
SIG_HASH_OIDS = {  # ecdsa-with-SHA*, sha*WithRSAEncryption
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}


class CheckFailed(Exception):
    pass


def need(cond, why):
    if not cond:
        raise CheckFailed(why)


# --- a minimal DER reader (definite lengths only, which DER requires) ---------------------------

def der_item(buf, pos):
    """Returns (tag, value_start, end) of the element at pos."""
    tag = buf[pos]
    length = buf[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        need(0 < count <= 4, "DER: bad length at %d" % pos)
        length = int.from_bytes(buf[start:start + count], "big")
        start += count
    need(start + length <= len(buf), "DER: element at %d overruns its container" % pos)
    return tag, start, start + length


def der_children(buf, start, end):
    """Lists (tag, value_start, end, element_start) of the elements between start and end."""
    items = []
    pos = start
    while pos < end:
        tag, vstart, vend = der_item(buf, pos)
        items.append((tag, vstart, vend, pos))
        pos = vend
    need(pos == end, "DER: trailing bytes")
    return items


def der_oid(value):
    arcs = []
    acc = 0
    for byte in value:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first] + arcs[1:])


def der_int(value):
    return int.from_bytes(value, "big", signed=True)


# --- helpers -----------------------------------------------------------------------------------

def http(url, body=None, content_type=None):
    # No proxy: the environment's http_proxy must not capture requests to 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=body)
    if content_type:
        req.add_header("Content-Type", content_type)
    with opener.open(req, timeout=15) as resp:
        need(resp.status == 200, "%s: HTTP %d" % (url, resp.status))
        return resp.headers.get("Content-Type"), resp.read()


def load_cert(pki, name):
    with open(os.path.join(pki, name), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def verify(public_key, signature, data, hash_alg):
    """Verifies an ECDSA or RSA PKCS#1 v1.5 signature; raises CheckFailed if it is bad."""
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hash_alg))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hash_alg)
        else:
            raise CheckFailed("unexpected key type %r" % type(public_key))
    except InvalidSignature:
        raise CheckFailed("signature does not verify")


def verify_issued_by(cert, issuer):
    need(cert.issuer == issuer.subject, "%s not issued by %s" % (cert.subject, issuer.subject))
    verify(issuer.public_key(), cert.signature, cert.tbs_certificate_bytes,
           cert.signature_hash_algorithm)


def key_bits(cert):
    """The subjectPublicKey BIT STRING contents (without the unused-bits octet)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    _, start, end = der_item(spki, 0)
    children = der_children(spki, start, end)
    tag, vstart, vend, _ = children[1]
    need(tag == 0x03, "SPKI without a BIT STRING")
    return spki[vstart + 1:vend]


def utcnow():
    # cryptography 38 returns naive datetimes in UTC.
    return datetime.datetime.utcnow()


def check_window(what, this_update, next_update, now):
    # Same machine, same clock: no allowance for skew.
    need(this_update <= now, "%s: thisUpdate %s is in the future" % (what, this_update))
    need(next_update is not None and now < next_update,
         "%s: nextUpdate %s is not after now" % (what, next_update))


# --- checks ------------------------------------------------------------------------------------

def check_ocsp(base, pki, _work):
    issuing = load_cert(pki, "issuing-ca.pem")
    responder = load_cert(pki, "ocsp-responder.pem")
    for name in LEAVES:
        leaf = load_cert(pki, name)
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA256()).build()
        ctype, der = http(base + "/", request.public_bytes(serialization.Encoding.DER),
                          "application/ocsp-request")
        need(ctype == "application/ocsp-response", "%s: Content-Type %s" % (name, ctype))
        resp = ocsp.load_der_ocsp_response(der)
        need(resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL,
             "%s: responseStatus %s" % (name, resp.response_status))
        # The CertID answered is the one asked, with SHA-256 throughout.
        need(isinstance(resp.hash_algorithm, hashes.SHA256), "%s: CertID hash %s" %
             (name, resp.hash_algorithm.name))
        need(resp.serial_number == leaf.serial_number, "%s: serial differs" % name)
        need(resp.issuer_name_hash == hashlib.sha256(issuing.subject.public_bytes()).digest(),
             "%s: issuerNameHash differs" % name)
        need(resp.issuer_key_hash == hashlib.sha256(key_bits(issuing)).digest(),
             "%s: issuerKeyHash differs" % name)
        # Delegated responder, ResponderID byKey: SHA-1 of its public key bits.
        need(resp.responder_name is None, "%s: ResponderID byName" % name)
        need(resp.responder_key_hash == hashlib.sha1(key_bits(responder)).digest(),
             "%s: responder key hash is not the delegated responder's" % name)
        need(len(resp.certificates) == 1 and resp.certificates[0] == responder,
             "%s: certs is not exactly the delegated responder" % name)
        verify_issued_by(responder, issuing)
        eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        need(ExtendedKeyUsageOID.OCSP_SIGNING in eku, "responder without EKU OCSPSigning")
        verify(responder.public_key(), resp.signature, resp.tbs_response_bytes,
               resp.signature_hash_algorithm)
        check_window(name, resp.this_update, resp.next_update, utcnow())
        status = resp.certificate_status.name.upper()
        if resp.certificate_status == ocsp.OCSPCertStatus.REVOKED:
            need(resp.revocation_time is not None and resp.revocation_time <= utcnow(),
                 "%s: revocationTime %s" % (name, resp.revocation_time))
            reason = resp.revocation_reason
            status += " " + (reason.name if reason is not None else "unspecified")
        print("ocsp %s %s" % (name, status))


def check_crl(base, pki, _work):
    issuing = load_cert(pki, "issuing-ca.pem")
    ctype, der = http(base + "/crl/demo-ca.crl")
    need(ctype == "application/pkix-crl", "Content-Type %s" % ctype)
    crl = x509.load_der_x509_crl(der)
    need(crl.is_signature_valid(issuing.public_key()), "CRL signature does not verify")
    need(crl.issuer == issuing.subject, "CRL issuer %s" % crl.issuer)
    check_window("CRL", crl.last_update, crl.next_update, utcnow())
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    need(number >= 1, "CRL number %d" % number)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    need(aki.key_identifier == ski.digest, "CRL AKI is not the issuing CA's key identifier")
    for name in LEAVES:
        entry = crl.get_revoked_certificate_by_serial_number(load_cert(pki, name).serial_number)
        if entry is None:
            outcome = "absent"
        else:
            try:
                outcome = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
            except x509.ExtensionNotFound:
                outcome = "unspecified"
        print("crl %s %s" % (name, outcome))


def check_tsa(base, pki, work):
    tsa = load_cert(pki, "tsa.pem")
    issuing = load_cert(pki, "issuing-ca.pem")
    data = os.path.join(work, "tsa-data.txt")
    query = os.path.join(work, "tsa-query.tsq")
    with open(data, "wb") as f:
        f.write(b"interop time stamp\n")
    subprocess.run(["openssl", "ts", "-query", "-data", data, "-sha256", "-cert", "-out", query],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(query, "rb") as f:
        tsq = f.read()
    with open(data, "rb") as f:
        imprint = hashlib.sha256(f.read()).digest()
    # TimeStampReq: version, messageImprint, [reqPolicy], [nonce], [certReq]: find the nonce.
    req = der_children(tsq, *der_item(tsq, 0)[1:])
    req_nonce = [der_int(tsq[s:e]) for t, s, e, _ in req[2:] if t == 0x02]
    need(len(req_nonce) == 1, "openssl ts -query made no nonce")

    ctype, tsr = http(base + "/tsa", tsq, "application/timestamp-query")
    need(ctype == "application/timestamp-reply", "Content-Type %s" % ctype)

    def inner(item):  # the elements inside a constructed element
        return der_children(tsr, item[1], item[2])

    def content(item):
        return tsr[item[1]:item[2]]

    # TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken ContentInfo OPTIONAL }
    top = der_item(tsr, 0)
    need(top[0] == 0x30 and top[2] == len(tsr), "TimeStampResp is not one SEQUENCE")
    resp = inner(top)
    status = der_int(content(inner(resp[0])[0]))
    need(status == 0, "PKIStatus %d, not granted" % status)
    need(len(resp) == 2, "granted without a timeStampToken")
    token = tsr[resp[1][3]:resp[1][2]]
    # ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT SignedData }
    content_type, explicit = inner(resp[1])
    need(der_oid(content(content_type)) == OID_SIGNED_DATA, "token is not id-signedData")
    # SignedData: version, digestAlgorithms, encapContentInfo, [0] certs, [1] crls, signerInfos
    signed_data = inner(inner(explicit)[0])
    encap = inner(signed_data[2])
    need(der_oid(content(encap[0])) == OID_TST_INFO, "eContentType is not id-ct-TSTInfo")
    tst_info = content(inner(encap[1])[0])

    # TSTInfo: version, policy, messageImprint, serialNumber, genTime, ..., nonce, ...
    tst = der_children(tst_info, *der_item(tst_info, 0)[1:])
    need(der_int(tst_info[tst[0][1]:tst[0][2]]) == 1, "TSTInfo version")
    alg, hashed = der_children(tst_info, tst[2][1], tst[2][2])
    alg_oid = der_children(tst_info, alg[1], alg[2])[0]
    need(HASH_OIDS.get(der_oid(tst_info[alg_oid[1]:alg_oid[2]])) is hashes.SHA256,
         "messageImprint algorithm is not SHA-256")
    need(tst_info[hashed[1]:hashed[2]] == imprint, "messageImprint differs from the data's hash")
    gen_time = tst_info[tst[4][1]:tst[4][2]].decode("ascii")
    gen = datetime.datetime.strptime(gen_time[:14], "%Y%m%d%H%M%S")
    need(abs((gen - utcnow()).total_seconds()) < 120, "genTime %s far from now" % gen_time)
    nonces = [der_int(tst_info[s:e]) for t, s, e, _ in tst[5:] if t == 0x02]
    need(nonces == req_nonce, "nonce not echoed")

    # certReq: the certificates (parsed by cryptography's pkcs7 loader) include the TSA's.
    certs = pkcs7.load_der_pkcs7_certificates(token)
    need(tsa in certs, "TSA certificate missing from the token")
    verify_issued_by(tsa, issuing)
    eku = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    need(eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING],
         "TSA certificate EKU is not critical timeStamping only")

    # SignerInfo: version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature
    signer_infos = inner(signed_data[-1])
    need(len(signer_infos) == 1, "%d SignerInfos" % len(signer_infos))
    si = inner(signer_infos[0])
    digest_alg = HASH_OIDS.get(der_oid(content(inner(si[2])[0])))
    need(digest_alg is not None, "unknown digestAlgorithm")
    need(si[3][0] == 0xA0, "no signedAttrs")
    attrs = {}
    for attr in inner(si[3]):
        attr_type, values = inner(attr)
        attrs[der_oid(content(attr_type))] = inner(values)[0]
    need(OID_CONTENT_TYPE in attrs and der_oid(content(attrs[OID_CONTENT_TYPE])) == OID_TST_INFO,
         "contentType attribute is not id-ct-TSTInfo")
    digest = hashes.Hash(digest_alg())
    digest.update(tst_info)
    need(OID_MESSAGE_DIGEST in attrs and content(attrs[OID_MESSAGE_DIGEST]) == digest.finalize(),
         "messageDigest attribute differs from the TSTInfo's digest")
    # RFC 5816: SigningCertificateV2 { certs SEQUENCE OF ESSCertIDv2 { [hashAlgorithm (default
    # SHA-256)], certHash, [issuerSerial] } }; the first names the TSA certificate.
    need(OID_SIGNING_CERT_V2 in attrs, "no signingCertificateV2 attribute")
    ess_cert_id = inner(inner(inner(attrs[OID_SIGNING_CERT_V2])[0])[0])
    cert_hash_alg = hashes.SHA256
    if ess_cert_id[0][0] == 0x30:
        cert_hash_alg = HASH_OIDS.get(der_oid(content(inner(ess_cert_id[0])[0])))
        ess_cert_id = ess_cert_id[1:]
    need(cert_hash_alg is not None, "unknown ESSCertIDv2 hash")
    cert_digest = hashes.Hash(cert_hash_alg())
    cert_digest.update(tsa.public_bytes(serialization.Encoding.DER))
    need(content(ess_cert_id[0]) == cert_digest.finalize(),
         "ESSCertIDv2 does not name the TSA certificate")
    # The signature covers the DER of signedAttrs with the SET OF tag (RFC 5652 5.4).
    signed_attrs = b"\x31" + tsr[si[3][3] + 1:si[3][2]]
    sig_oid = der_oid(content(inner(si[4])[0]))
    sig_hash = SIG_HASH_OIDS.get(sig_oid, digest_alg if sig_oid == "1.2.840.113549.1.1.1" else None)
    need(sig_hash is not None, "unknown signatureAlgorithm %s" % sig_oid)
    verify(tsa.public_key(), content(si[5]), signed_attrs, sig_hash())
    print("tsa granted signedData tstInfo sha256 signature-valid")


CHECKS = {"ocsp": check_ocsp, "crl": check_crl, "tsa": check_tsa}


def main(argv):
    if len(argv) < 5 or any(c not in CHECKS for c in argv[4:]):
        sys.stderr.write("usage: crypto_check.py BASE_URL PKI_DIR WORK_DIR ocsp|crl|tsa...\n")
        return 2
    base, pki, work = argv[1].rstrip("/"), argv[2], argv[3]
    print("cryptography %s" % cryptography.__version__)
    failed = 0
    for name in argv[4:]:
        try:
            CHECKS[name](base, pki, work)
        except CheckFailed as e:
            print("FAIL %s: %s" % (name, e))
            failed = 1
    sys.stdout.flush()
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv))
