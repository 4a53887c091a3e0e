from auditrelay.ops.cli import main

main()
