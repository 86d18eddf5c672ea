"""Homomorphic encryption (Part IV of the course): compute on data you cannot read.

- :mod:`course_lib.he.paillier` — Paillier (``phe``), additively homomorphic: a server adds
  clients' encrypted model updates and only the key holder can read the sum (lesson 18).
- :mod:`course_lib.he.ckks` — CKKS (TenSEAL), approximate arithmetic on encrypted real vectors:
  a small network classifies an encrypted image it never sees (lesson 18); the server's pass runs
  on TenSEAL's ciphertext with SEAL's own API (``tenseal.sealapi``) for a layout with 12 rotations.

Private set intersection, which uses Diffie–Hellman rather than homomorphic encryption, lives in
:mod:`course_lib.psi` (lesson 19).

**Device: the CPU.** ``phe`` computes with Python integers and TenSEAL with Microsoft SEAL on the
CPU, so tensors that come from a GPU (a model or update trained with
:func:`course_lib.lesson_device`) are copied to the CPU where they enter:
:func:`.paillier.encrypt_update` flattens updates on the CPU, :class:`.ckks.EncryptedMLP` reads
weights with ``.tolist()``, and :func:`.ckks.encrypted_inference` compares CPU logits.

Import what you need from the module itself, e.g. ``from course_lib.he.paillier import
encrypt_update``; this package imports nothing, so importing one part never pulls in TenSEAL.
"""
