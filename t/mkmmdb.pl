#!/usr/bin/perl
# Write a small GeoIP2-Country-shaped MMDB for the tests:
#   perl t/mkmmdb.pl OUT.mmdb 127.0.0.2/32=FR 203.0.113.0/24=JP ...
# Only country.iso_code is stored, which is all legate reads.
use strict;
use warnings;
use MaxMind::DB::Writer::Tree;

my ($out, @pairs) = @ARGV;
die "usage: $0 OUT NET=CC...\n" unless defined $out;
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version               => 6,
    record_size              => 24,
    database_type            => 'GeoLite2-Country',
    languages                => ['en'],
    description              => { en => 'legate test countries' },
    remove_reserved_networks => 0,      # the tests live on loopback
    map_key_type_callback    => sub {
        { country => 'map', iso_code => 'utf8_string' }->{ $_[0] };
    },
);
for my $p (@pairs) {
    my ($net, $cc) = split /=/, $p, 2;
    $tree->insert_network($net, { country => { iso_code => $cc } });
}
open my $fh, '>:raw', "$out.tmp" or die "$out.tmp: $!\n";
$tree->write_tree($fh);
close $fh or die "$out.tmp: $!\n";
rename "$out.tmp", $out or die "$out: $!\n";
