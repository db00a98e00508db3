// SPDX-License-Identifier: Apache-2.0
// Relying party for test_interop: validates demo certificates with the JDK's own PKIX
// CertPathValidator and PKIXRevocationChecker, which fetch OCSP answers and CRLs from the URLs
// the certificates carry (AIA OCSP, CRL distribution point), so pkiva is judged by an
// implementation that shares no code with it.
//
// usage: java PkixCheck ocsp|crl ROOT.pem ISSUING.pem LEAF.pem...
// For each LEAF prints one line "LEAF VALID", "LEAF REVOKED REASON index=N" (N: position in the
// path, 0 = the leaf, 1 = the issuing CA) or "LEAF INVALID BASIC_REASON message"; exits 0 when
// every leaf was judged, 2 on a usage or set-up error.
//
// ocsp: OCSP only (NO_FALLBACK), for the leaf and the issuing CA; with
//       -Djdk.security.certpath.ocspNonce=true the JDK sends a nonce (pkiva signs live).
// crl:  CRLs only (PREFER_CRLS + NO_FALLBACK), fetched from the CRL distribution points; needs
//       -Dcom.sun.security.enableCRLDP=true, which the program sets itself.
import java.io.FileInputStream;
import java.io.InputStream;
import java.security.cert.CertPath;
import java.security.cert.CertPathValidator;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertificateFactory;
import java.security.cert.CertificateRevokedException;
import java.security.cert.PKIXParameters;
import java.security.cert.PKIXRevocationChecker;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.util.Collections;
import java.util.EnumSet;
import java.util.List;

public final class PkixCheck {
    private PkixCheck() {}

    private static X509Certificate load(CertificateFactory cf, String path) throws Exception {
        try (InputStream in = new FileInputStream(path)) {
            return (X509Certificate) cf.generateCertificate(in);
        }
    }

    private static String judge(CertificateFactory cf, String mode, X509Certificate root,
                                X509Certificate issuing, X509Certificate leaf) throws Exception {
        CertPath path = cf.generateCertPath(List.of(leaf, issuing));
        PKIXParameters params =
            new PKIXParameters(Collections.singleton(new TrustAnchor(root, null)));
        CertPathValidator validator = CertPathValidator.getInstance("PKIX");
        PKIXRevocationChecker checker = (PKIXRevocationChecker) validator.getRevocationChecker();
        if (mode.equals("ocsp"))
            checker.setOptions(EnumSet.of(PKIXRevocationChecker.Option.NO_FALLBACK));
        else
            checker.setOptions(EnumSet.of(PKIXRevocationChecker.Option.PREFER_CRLS,
                                          PKIXRevocationChecker.Option.NO_FALLBACK));
        // A PKIXRevocationChecker added to the parameters replaces the default checker.
        params.setRevocationEnabled(true);
        params.addCertPathChecker(checker);
        try {
            validator.validate(path, params);
            return "VALID";
        } catch (CertPathValidatorException e) {
            if (e.getReason() == CertPathValidatorException.BasicReason.REVOKED &&
                e.getCause() instanceof CertificateRevokedException) {
                CertificateRevokedException r = (CertificateRevokedException) e.getCause();
                return "REVOKED " + r.getRevocationReason() + " index=" + e.getIndex();
            }
            return "INVALID " + e.getReason() + " " + e.getMessage();
        }
    }

    public static void main(String[] args) {
        if (args.length < 4 || !(args[0].equals("ocsp") || args[0].equals("crl"))) {
            System.err.println("usage: java PkixCheck ocsp|crl ROOT.pem ISSUING.pem LEAF.pem...");
            System.exit(2);
        }
        if (args[0].equals("crl"))
            System.setProperty("com.sun.security.enableCRLDP", "true");
        try {
            CertificateFactory cf = CertificateFactory.getInstance("X.509");
            X509Certificate root = load(cf, args[1]);
            X509Certificate issuing = load(cf, args[2]);
            for (int i = 3; i < args.length; i++)
                System.out.println(args[i] + " " + judge(cf, args[0], root, issuing,
                                                         load(cf, args[i])));
        } catch (Exception e) {
            System.err.println("PkixCheck: " + e);
            System.exit(2);
        }
    }
}
