// SPDX-License-Identifier: Apache-2.0
// Relying party for test_interop built on Bouncy Castle (Debian's bcprov/bcpkix 1.72): the
// library behind most PDF and document signers' time stamps (PDFBox, iText, the EU's DSS) and
// many Java OCSP clients. It shares no code with pkiva, OpenSSL or the JDK's own checks.
//
// usage: java -cp bcprov.jar:bcpkix.jar:bcutil.jar:DIR BcCheck URL PKI_DIR
//
// ocsp: for demo-good, demo-revoked and demo-hold, a request built by BC (SHA-1 CertID without a
//       nonce; SHA-256 CertID with an RFC 8954 nonce) POSTed to URL; the BasicOCSPResponse's
//       signature verified with the responder certificate it carries, that certificate verified
//       with the issuing CA's key and checked for id-kp-OCSPSigning, the ResponderID checked
//       against it (byKey or byName), the CertID, the nonce and the validity window checked.
//       Prints "ocsp LEAF HASH GOOD|REVOKED reason=N|UNKNOWN".
// crl:  URL/crl/demo-ca.crl: signature with the issuing CA's key, the issuer name, nextUpdate in
//       the future, the revoked demo serials and their reasons. Prints "crl demo-ca valid ...".
// tsa:  RFC 3161 requests built by BC (SHA-256 and SHA-512 imprints, nonce, certReq) POSTed to
//       URL/tsa; TimeStampResponse.validate (status, imprint, nonce, policy) and
//       TimeStampToken.validate (the signature, ESSCertID/ESSCertIDv2 against the signer's
//       certificate, its critical id-kp-timeStamping, genTime inside its validity); the signer's
//       certificate verified with the issuing CA's key. Prints "tsa HASH granted validated".
// Exits 0 when every check ran (verdicts are printed), 1 on the first failed check.
import java.io.ByteArrayOutputStream;
import java.io.FileReader;
import java.io.InputStream;
import java.io.OutputStream;
import java.math.BigInteger;
import java.net.HttpURLConnection;
import java.net.URL;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.security.Security;
import java.util.Arrays;
import java.util.Collection;
import java.util.Date;
import org.bouncycastle.asn1.DEROctetString;
import org.bouncycastle.asn1.ocsp.OCSPObjectIdentifiers;
import org.bouncycastle.asn1.x509.AlgorithmIdentifier;
import org.bouncycastle.asn1.x509.CRLReason;
import org.bouncycastle.asn1.x509.ExtendedKeyUsage;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.Extensions;
import org.bouncycastle.asn1.x509.KeyPurposeId;
import org.bouncycastle.cert.X509CRLEntryHolder;
import org.bouncycastle.cert.X509CRLHolder;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.ocsp.BasicOCSPResp;
import org.bouncycastle.cert.ocsp.CertificateID;
import org.bouncycastle.cert.ocsp.CertificateStatus;
import org.bouncycastle.cert.ocsp.OCSPReq;
import org.bouncycastle.cert.ocsp.OCSPReqBuilder;
import org.bouncycastle.cert.ocsp.OCSPResp;
import org.bouncycastle.cert.ocsp.RespID;
import org.bouncycastle.cert.ocsp.RevokedStatus;
import org.bouncycastle.cert.ocsp.SingleResp;
import org.bouncycastle.cert.ocsp.UnknownStatus;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.operator.DigestCalculator;
import org.bouncycastle.operator.DigestCalculatorProvider;
import org.bouncycastle.operator.jcajce.JcaContentVerifierProviderBuilder;
import org.bouncycastle.operator.jcajce.JcaDigestCalculatorProviderBuilder;
import org.bouncycastle.asn1.nist.NISTObjectIdentifiers;
import org.bouncycastle.cms.jcajce.JcaSimpleSignerInfoVerifierBuilder;
import org.bouncycastle.tsp.TSPAlgorithms;
import org.bouncycastle.tsp.TimeStampRequest;
import org.bouncycastle.tsp.TimeStampRequestGenerator;
import org.bouncycastle.tsp.TimeStampResponse;
import org.bouncycastle.tsp.TimeStampToken;
import org.bouncycastle.util.Selector;

public final class BcCheck {
    private BcCheck() {}

    private static final SecureRandom RANDOM = new SecureRandom();

    private static void check(boolean ok, String what) {
        if (!ok) {
            System.out.println("FAILED: " + what);
            System.exit(1);
        }
    }

    private static X509CertificateHolder pem(String path) throws Exception {
        try (PEMParser p = new PEMParser(new FileReader(path))) {
            return (X509CertificateHolder) p.readObject();
        }
    }

    private static byte[] http(String url, String contentType, byte[] body) throws Exception {
        HttpURLConnection c = (HttpURLConnection) new URL(url).openConnection();
        c.setConnectTimeout(10000);
        c.setReadTimeout(10000);
        if (body != null) {
            c.setDoOutput(true);
            c.setRequestMethod("POST");
            c.setRequestProperty("Content-Type", contentType);
            try (OutputStream out = c.getOutputStream()) {
                out.write(body);
            }
        }
        check(c.getResponseCode() == 200, url + ": HTTP " + c.getResponseCode());
        try (InputStream in = c.getInputStream()) {
            ByteArrayOutputStream b = new ByteArrayOutputStream();
            in.transferTo(b);
            return b.toByteArray();
        }
    }

    private static boolean signedBy(X509CertificateHolder cert, X509CertificateHolder issuer)
        throws Exception {
        return cert.getIssuer().equals(issuer.getSubject()) &&
            cert.isSignatureValid(new JcaContentVerifierProviderBuilder().setProvider("BC").build(issuer));
    }

    private static void ocsp(String url, String pki, String leafName, AlgorithmIdentifier hash,
                             String hashName, boolean nonce) throws Exception {
        X509CertificateHolder issuer = pem(pki + "/issuing-ca.pem");
        X509CertificateHolder leaf = pem(pki + "/" + leafName);
        DigestCalculatorProvider dcp = new JcaDigestCalculatorProviderBuilder().setProvider("BC").build();
        CertificateID id = new CertificateID(dcp.get(hash), issuer, leaf.getSerialNumber());
        OCSPReqBuilder rb = new OCSPReqBuilder().addRequest(id);
        byte[] n = new byte[16];
        RANDOM.nextBytes(n);
        if (nonce) // RFC 8954: extnValue is the DER of Nonce ::= OCTET STRING
            rb.setRequestExtensions(new Extensions(new Extension(
                OCSPObjectIdentifiers.id_pkix_ocsp_nonce, false,
                new DEROctetString(new DEROctetString(n).getEncoded()))));
        OCSPReq req = rb.build();
        OCSPResp resp = new OCSPResp(http(url + "/", "application/ocsp-request", req.getEncoded()));
        check(resp.getStatus() == OCSPResp.SUCCESSFUL, leafName + ": responseStatus " + resp.getStatus());
        BasicOCSPResp basic = (BasicOCSPResp) resp.getResponseObject();
        X509CertificateHolder[] certs = basic.getCerts();
        X509CertificateHolder signer = certs.length > 0 ? certs[0] : issuer;
        check(basic.isSignatureValid(new JcaContentVerifierProviderBuilder().setProvider("BC").build(signer)),
              leafName + ": response signature");
        if (signer != issuer) { // a delegated responder: issued by the CA, id-kp-OCSPSigning
            check(signedBy(signer, issuer), leafName + ": responder certificate not issued by the CA");
            ExtendedKeyUsage eku = ExtendedKeyUsage.fromExtensions(signer.getExtensions());
            check(eku != null && eku.hasKeyPurposeId(KeyPurposeId.id_kp_OCSPSigning),
                  leafName + ": responder certificate without id-kp-OCSPSigning");
        }
        DigestCalculator sha1 = dcp.get(RespID.HASH_SHA1);
        check(basic.getResponderId().equals(new RespID(signer.getSubjectPublicKeyInfo(), sha1)) ||
              basic.getResponderId().equals(new RespID(signer.getSubject())),
              leafName + ": ResponderID names another key");
        SingleResp[] singles = basic.getResponses();
        check(singles.length == 1 && singles[0].getCertID().equals(id), leafName + ": CertID");
        Date now = new Date();
        check(!singles[0].getThisUpdate().after(new Date(now.getTime() + 60000)) &&
              singles[0].getNextUpdate() != null && singles[0].getNextUpdate().after(now),
              leafName + ": thisUpdate/nextUpdate");
        if (nonce) {
            Extension e = basic.getExtension(OCSPObjectIdentifiers.id_pkix_ocsp_nonce);
            check(e != null && Arrays.equals(e.getExtnValue().getOctets(), new DEROctetString(n).getEncoded()),
                  leafName + ": nonce not echoed");
        }
        CertificateStatus st = singles[0].getCertStatus();
        String verdict = st == CertificateStatus.GOOD ? "GOOD"
            : st instanceof RevokedStatus ? "REVOKED reason=" +
                (((RevokedStatus) st).hasRevocationReason() ? ((RevokedStatus) st).getRevocationReason() : -1)
            : st instanceof UnknownStatus ? "UNKNOWN" : "?";
        System.out.println("ocsp " + leafName + " " + hashName + (nonce ? " nonce " : " ") + verdict);
    }

    private static void crl(String url, String pki) throws Exception {
        X509CertificateHolder issuer = pem(pki + "/issuing-ca.pem");
        X509CRLHolder crl = new X509CRLHolder(http(url + "/crl/demo-ca.crl", null, null));
        check(crl.getIssuer().equals(issuer.getSubject()), "crl: issuer name");
        check(crl.isSignatureValid(new JcaContentVerifierProviderBuilder().setProvider("BC").build(issuer)),
              "crl: signature");
        check(crl.getNextUpdate() != null && crl.getNextUpdate().after(new Date()), "crl: nextUpdate");
        StringBuilder listed = new StringBuilder();
        for (String name : new String[] {"demo-revoked.pem", "demo-hold.pem", "demo-good.pem"}) {
            X509CRLEntryHolder e = crl.getRevokedCertificate(pem(pki + "/" + name).getSerialNumber());
            String reason = "absent";
            if (e != null) {
                Extension r = e.getExtension(Extension.reasonCode);
                reason = r == null ? "unspecified"
                    : "reason=" + CRLReason.getInstance(r.getParsedValue()).getValue().intValue();
            }
            listed.append(' ').append(name).append(' ').append(reason);
        }
        System.out.println("crl demo-ca valid" + listed);
    }

    private static void tsa(String url, String pki, String hashName) throws Exception {
        X509CertificateHolder issuer = pem(pki + "/issuing-ca.pem");
        byte[] data = new byte[100];
        RANDOM.nextBytes(data);
        TimeStampRequestGenerator gen = new TimeStampRequestGenerator();
        gen.setCertReq(true);
        BigInteger nonce = new BigInteger(64, RANDOM);
        TimeStampRequest req = hashName.equals("sha256")
            ? gen.generate(TSPAlgorithms.SHA256, MessageDigest.getInstance("SHA-256").digest(data), nonce)
            : gen.generate(TSPAlgorithms.SHA512, MessageDigest.getInstance("SHA-512").digest(data), nonce);
        TimeStampResponse resp =
            new TimeStampResponse(http(url + "/tsa", "application/timestamp-query", req.getEncoded()));
        resp.validate(req); // status granted, imprint, nonce, policy; throws TSPValidationException
        TimeStampToken tok = resp.getTimeStampToken();
        check(tok != null, "tsa: no token");
        @SuppressWarnings("unchecked")
        Collection<X509CertificateHolder> found =
            tok.getCertificates().getMatches((Selector<X509CertificateHolder>) tok.getSID());
        check(found.size() == 1, "tsa: signer certificate not in the token (certReq)");
        X509CertificateHolder tsaCert = found.iterator().next();
        // The signature, ESSCertID(v2) against tsaCert, its critical EKU timeStamping, genTime
        // inside its validity.
        tok.validate(new JcaSimpleSignerInfoVerifierBuilder().setProvider("BC").build(tsaCert));
        check(signedBy(tsaCert, issuer), "tsa: TSA certificate not issued by the issuing CA");
        check(tok.getTimeStampInfo().getNonce().equals(nonce), "tsa: nonce");
        System.out.println("tsa " + hashName + " granted validated");
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: BcCheck URL PKI_DIR");
            System.exit(2);
        }
        Security.addProvider(new BouncyCastleProvider());
        String url = args[0], pki = args[1];
        AlgorithmIdentifier sha1 = CertificateID.HASH_SHA1; // parameters NULL, as BC writes them
        AlgorithmIdentifier sha256 = new AlgorithmIdentifier(NISTObjectIdentifiers.id_sha256); // absent
        for (String leaf : new String[] {"demo-good.pem", "demo-revoked.pem", "demo-hold.pem"}) {
            ocsp(url, pki, leaf, sha1, "sha1", false);
            ocsp(url, pki, leaf, sha256, "sha256", true);
        }
        crl(url, pki);
        tsa(url, pki, "sha256");
        tsa(url, pki, "sha512");
    }
}
