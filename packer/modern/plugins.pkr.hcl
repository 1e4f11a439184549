# For packer >= 1.7 (mandatory from 1.10, which no longer bundles the qemu builder): the plugin the
# template in packer/ needs. Kept out of packer/ itself because packer 1.6.6 (Debian bookworm's)
# rejects the required_plugins block. Usage: packer/README.md, "Modern packer".
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}
